"""Published weights: lgt-unet's encoder is Twins-SVT and its decoder blocks are UNetFormer's,
checked against independent implementations written here from the references' descriptions
(plain tensor code, explicit softmax attention, no shared modules); --init maps every tensor
of Twins-SVT (timm names) and ResNet (torchvision names) files and refuses what does not fit."""
import math

import pytest
import torch
import torch.nn.functional as F

from gee_export.common.bands import BAND_NAMES, parse_bands
from gee_export.common.errors import InputError
from training.models import build_model
from training.models.pretrained import adapt_input_conv, load_pretrained

TWINS = {  # timm's twins_svt_* configurations
    "paper": dict(dims=(64, 128, 256, 512), heads=(2, 4, 8, 16), depths=(2, 2, 10, 4)),
    "paper-b": dict(dims=(96, 192, 384, 768), heads=(3, 6, 12, 24), depths=(2, 2, 18, 2)),
    "paper-l": dict(dims=(128, 256, 512, 1024), heads=(4, 8, 16, 32), depths=(2, 2, 18, 2)),
}
SR, WS, RGB = (8, 4, 2, 1), 7, ["B4", "B3", "B2"]


# -- an independent Twins-SVT: the key names and shapes timm saves, and its forward ----------------

def twins_shapes(dims, heads, depths, in_chans=3, classes=1000) -> dict:
    shapes, prev = {}, in_chans
    for s, d in enumerate(dims):
        p = 4 if s == 0 else 2
        shapes |= {f"patch_embeds.{s}.proj.weight": (d, prev, p, p),
                   f"patch_embeds.{s}.proj.bias": (d,), f"patch_embeds.{s}.norm.weight": (d,),
                   f"patch_embeds.{s}.norm.bias": (d,),
                   f"pos_block.{s}.proj.0.weight": (d, 1, 3, 3), f"pos_block.{s}.proj.0.bias": (d,)}
        for j in range(depths[s]):
            b = f"blocks.{s}.{j}."
            for n in ("norm1", "norm2"):
                shapes |= {b + n + ".weight": (d,), b + n + ".bias": (d,)}
            shapes |= {b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
                       b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,),
                       b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,)}
            if j % 2 == 0:  # LSA
                shapes |= {b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,)}
            else:  # GSA
                shapes |= {b + "attn.q.weight": (d, d), b + "attn.q.bias": (d,),
                           b + "attn.kv.weight": (2 * d, d), b + "attn.kv.bias": (2 * d,)}
                if SR[s] > 1:
                    shapes |= {b + "attn.sr.weight": (d, d, SR[s], SR[s]),
                               b + "attn.sr.bias": (d,), b + "attn.norm.weight": (d,),
                               b + "attn.norm.bias": (d,)}
        prev = d
    return shapes | {"norm.weight": (dims[-1],), "norm.bias": (dims[-1],),
                     "head.weight": (classes, dims[-1]), "head.bias": (classes,)}


def random_state(shapes: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shp in shapes.items():
        fan_in = math.prod(shp[1:]) if len(shp) > 1 else 1
        t = torch.randn(shp, generator=g) / math.sqrt(fan_in)
        if k.endswith("running_var"):
            t = t.abs() + 0.5
        elif k.endswith("num_batches_tracked"):
            t = torch.tensor(0)
        elif len(shp) == 1 and ("norm" in k or "bn" in k) and k.endswith("weight"):
            t = 1 + 0.1 * t
        out[k] = t
    return out


def attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v


def ref_lsa(sd, p, x, H, W, heads):
    B, N, C = x.shape
    g = x.view(B, H, W, C)
    ph, pw = -H % WS, -W % WS
    g = F.pad(g, (0, 0, 0, pw, 0, ph))  # zeros, attended to
    Hp, Wp = H + ph, W + pw
    out = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
    for i in range(0, Hp, WS):
        for j in range(0, Wp, WS):
            t = g[:, i:i + WS, j:j + WS].reshape(B, WS * WS, C)
            q, k, v = F.linear(t, sd[p + "qkv.weight"], sd[p + "qkv.bias"]).chunk(3, -1)
            split = lambda a: a.reshape(B, -1, heads, C // heads).transpose(1, 2)  # noqa: E731
            o = attention(split(q), split(k), split(v)).transpose(1, 2).reshape(B, WS, WS, C)
            out[:, i:i + WS, j:j + WS] = o
    y = out[:, :H, :W].reshape(B, N, C)
    return F.linear(y, sd[p + "proj.weight"], sd[p + "proj.bias"])


def ref_gsa(sd, p, x, H, W, heads, sr):
    B, N, C = x.shape
    q = F.linear(x, sd[p + "q.weight"], sd[p + "q.bias"])
    src = x
    if sr > 1:
        m = x.transpose(1, 2).reshape(B, C, H, W)
        src = F.conv2d(m, sd[p + "sr.weight"], sd[p + "sr.bias"], stride=sr)  # floor
        src = F.layer_norm(src.flatten(2).transpose(1, 2), (C,), sd[p + "norm.weight"],
                           sd[p + "norm.bias"], 1e-5)
    k, v = F.linear(src, sd[p + "kv.weight"], sd[p + "kv.bias"]).chunk(2, -1)
    split = lambda a: a.reshape(B, -1, heads, C // heads).transpose(1, 2)  # noqa: E731
    o = attention(split(q), split(k), split(v)).transpose(1, 2).reshape(B, N, C)
    return F.linear(o, sd[p + "proj.weight"], sd[p + "proj.bias"])


def ref_twins_stages(sd, x, dims, heads, depths):
    """The map each stage hands on (and the last one after the final norm)."""
    outs = []
    for s, d in enumerate(dims):
        p = 4 if s == 0 else 2
        x = F.conv2d(x, sd[f"patch_embeds.{s}.proj.weight"], sd[f"patch_embeds.{s}.proj.bias"],
                     stride=p)
        B, C, H, W = x.shape
        t = F.layer_norm(x.flatten(2).transpose(1, 2), (C,), sd[f"patch_embeds.{s}.norm.weight"],
                         sd[f"patch_embeds.{s}.norm.bias"], 1e-5)
        for j in range(depths[s]):
            b = f"blocks.{s}.{j}."
            ln = lambda a, n: F.layer_norm(a, (C,), sd[b + n + ".weight"],  # noqa: E731
                                           sd[b + n + ".bias"], 1e-6)
            a = ln(t, "norm1")
            t = t + (ref_lsa(sd, b + "attn.", a, H, W, heads[s]) if j % 2 == 0 else
                     ref_gsa(sd, b + "attn.", a, H, W, heads[s], SR[s]))
            h = F.gelu(F.linear(ln(t, "norm2"), sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
            t = t + F.linear(h, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
            if j == 0:
                m = t.transpose(1, 2).reshape(B, C, H, W)
                m = m + F.conv2d(m, sd[f"pos_block.{s}.proj.0.weight"],
                                 sd[f"pos_block.{s}.proj.0.bias"], padding=1, groups=C)
                t = m.flatten(2).transpose(1, 2)
        if s == len(dims) - 1:
            t = F.layer_norm(t, (C,), sd["norm.weight"], sd["norm.bias"], 1e-6)
        x = t.transpose(1, 2).reshape(B, C, H, W)
        outs.append(x)
    return outs


def save(sd, path):
    """As the references publish them: safetensors, or a torch file holding a state dict."""
    from safetensors.torch import save_file

    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": sd}, path)
    return path


# 256: stage maps 64, 32, 16, 8 are not multiples of 7. float64 shows differences (such as a
# LayerNorm eps) that float32 rounding would hide.
@pytest.mark.parametrize("size, dtype, tol", [(224, torch.float32, 1e-5),
                                              (256, torch.float32, 1e-5),
                                              (256, torch.float64, 1e-10)])
def test_encoder_equals_twins_svt_small(tmp_path, size, dtype, tol):
    cfg = TWINS["paper"]
    sd = random_state(twins_shapes(**cfg))
    model = build_model("lgt-unet", "paper", 3).eval()
    report = load_pretrained(model, "lgt-unet", [save(sd, tmp_path / "twins.safetensors")], RGB)
    assert report.unused == 2 and report.loaded == len(sd) - 2  # every tensor but the head
    assert not [k for k in report.random if k.startswith("encoder.")]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    model, x, sd = model.to(dtype), x.to(dtype), {k: v.to(dtype) for k, v in sd.items()}
    with torch.no_grad():
        ours = model.encoder(x)
        ref = ref_twins_stages(sd, x, **cfg)
    for s, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape
        err = ((a - b).abs().max() / b.abs().max()).item()
        assert err < tol, f"stage {s + 1}: relative error {err:.2e}"


@pytest.mark.parametrize("preset", list(TWINS))
def test_every_twins_tensor_has_its_place(preset):
    with torch.device("meta"):
        model = build_model("lgt-unet", preset, 3)
    enc = {k.removeprefix("encoder."): tuple(v.shape) for k, v in model.state_dict().items()
           if k.startswith("encoder.")}
    ref = {k: tuple(v) for k, v in twins_shapes(**TWINS[preset]).items()
           if not k.startswith("head.")}
    assert enc == ref


def test_band_adaptation_rule():
    w = torch.randn(8, 3, 4, 4)
    a = adapt_input_conv(w, list(BAND_NAMES))
    scale = 3 / 11
    for name, rgb in zip(RGB, range(3)):
        torch.testing.assert_close(a[:, BAND_NAMES.index(name)], w[:, rgb] * scale)
    torch.testing.assert_close(a[:, BAND_NAMES.index("VV")], w.mean(1) * scale)
    # Constant input across bands: the adapted layer answers as the RGB layer did.
    x = torch.ones(1, 11, 4, 4)
    torch.testing.assert_close(F.conv2d(x, a), F.conv2d(torch.ones(1, 3, 4, 4), w))


def test_init_refuses_what_does_not_fit(tmp_path):
    model = build_model("lgt-unet", "paper", 11)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = save(random_state(twins_shapes(**TWINS["paper-b"])), tmp_path / "b.safetensors")
    with pytest.raises(InputError, match=r"b.safetensors: blocks\.0\.0\.\S+ is \(96,.*\) in the "
                                          r"file but \(64,.*\) in --model lgt-unet"):
        load_pretrained(model, "lgt-unet", [base], list(BAND_NAMES))
    partial = random_state(twins_shapes(**TWINS["paper"]))
    del partial["blocks.2.3.attn.kv.weight"]
    with pytest.raises(InputError, match=r"has nothing for encoder.blocks.2.3.attn.kv.weight"):
        load_pretrained(model, "lgt-unet", [save(partial, tmp_path / "p.safetensors")],
                        list(BAND_NAMES))
    with pytest.raises(InputError, match="do not fit --model lgt-unet"):
        load_pretrained(model, "lgt-unet", [save(resnet_state("resnet18"), tmp_path / "r.pt")],
                        list(BAND_NAMES))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not weights")
    with pytest.raises(InputError, match="cannot be read as weights"):
        load_pretrained(model, "lgt-unet", [junk], list(BAND_NAMES))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


# -- ResNet with torchvision's key names ------------------------------------------------------------

RESNET = {"resnet18": (False, (2, 2, 2, 2)), "resnet50": (True, (3, 4, 6, 3))}


def resnet_shapes(name: str) -> dict:
    bottleneck, depths = RESNET[name]
    bn = lambda p, c: {f"{p}.{n}": (c,) for n in ("weight", "bias", "running_mean",  # noqa: E731
                                                   "running_var")} | {f"{p}.num_batches_tracked": ()}
    shapes = {"conv1.weight": (64, 3, 7, 7)} | bn("bn1", 64)
    cin = 64
    for i, n in enumerate(depths):
        planes = 64 * 2 ** i
        cout = planes * (4 if bottleneck else 1)
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            if bottleneck:
                convs = [(cin, planes, 1), (planes, planes, 3), (planes, cout, 1)]
            else:
                convs = [(cin, planes, 3), (planes, cout, 3)]
            for k, (a, b, ks) in enumerate(convs, 1):
                shapes |= {f"{p}.conv{k}.weight": (b, a, ks, ks)} | bn(f"{p}.bn{k}", b)
            if j == 0 and (i > 0 or cin != cout):
                shapes |= {f"{p}.downsample.0.weight": (cout, cin, 1, 1)} | bn(
                    f"{p}.downsample.1", cout)
            cin = cout
    return shapes | {"fc.weight": (1000, cin), "fc.bias": (1000,)}


def resnet_state(name: str) -> dict:
    return random_state(resnet_shapes(name))


def ref_resnet_layer4(sd, x, bottleneck, depths):
    """torchvision's ResNet forward with replace_stride_with_dilation=[False, False, True]."""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"],
                            sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)
    x = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")),
                     3, 2, 1)
    dilation = 1
    for i, n in enumerate(depths, 1):
        stride, prev = (1 if i == 1 else 2), dilation
        if i == 4:
            dilation, stride = dilation * stride, 1
        for j in range(n):
            p, s, d = f"layer{i}.{j}", (stride if j == 0 else 1), (prev if j == 0 else dilation)
            if bottleneck:
                o = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"]), p + ".bn1"))
                o = F.relu(bn(F.conv2d(o, sd[p + ".conv2.weight"], stride=s, padding=d,
                                       dilation=d), p + ".bn2"))
                o = bn(F.conv2d(o, sd[p + ".conv3.weight"]), p + ".bn3")
            else:
                o = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=s, padding=d,
                                       dilation=d), p + ".bn1"))
                o = bn(F.conv2d(o, sd[p + ".conv2.weight"], padding=d, dilation=d), p + ".bn2")
            short = (bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), p + ".downsample.1")
                     if p + ".downsample.0.weight" in sd else x)
            x = F.relu(o + short)
    return x


@pytest.mark.parametrize("model_name, preset, backbone", [
    ("deeplabv3plus", "paper", "resnet50"), ("attention-deeplabv3plus", "paper", "resnet50")])
def test_resnet_backbone_equals_torchvision(tmp_path, model_name, preset, backbone):
    sd = resnet_state(backbone)
    model = build_model(model_name, preset, 3).eval()
    report = load_pretrained(model, model_name, [save(sd, tmp_path / "r.safetensors")], RGB)
    assert report.unused == 2 and report.loaded == len(sd) - 2
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.backbone(x)[1]
        ref = ref_resnet_layer4(sd, x, *RESNET[backbone])
    assert ours.shape == ref.shape == (1, 2048, 4, 4)  # output stride 16
    assert ((ours - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_resnet18_blocks_into_the_cnn_decoder(tmp_path):
    sd = resnet_state("resnet18")
    model = build_model("lgt-unet-cnn-decoder", "paper", 11)
    report = load_pretrained(model, "lgt-unet-cnn-decoder", [save(sd, tmp_path / "r.pt")],
                             list(BAND_NAMES))
    assert report.loaded == 2 * (1 + 5 + 1 + 5)  # two blocks: conv1, bn1 (5 tensors), conv2, bn2
    torch.testing.assert_close(model.decoder.b3.conv2.weight, sd["layer1.0.conv2.weight"])
    torch.testing.assert_close(model.decoder.b2.bn1.running_var, sd["layer1.1.bn1.running_var"])


# -- the first convolution: saved for our bands, for RGB, or for neither --------------------------

FIRST = {"twins": ("lgt-unet", "patch_embeds.0.proj.weight", "encoder.patch_embeds.0.proj.weight"),
         "resnet": ("deeplabv3plus", "conv1.weight", "backbone.conv1.weight")}


def state_with_channels(kind: str, channels: int) -> dict:
    """A timm Twins-SVT-S or torchvision ResNet-50 state dict whose first convolution takes
    `channels` inputs."""
    if kind == "twins":
        return random_state(twins_shapes(**TWINS["paper"], in_chans=channels))
    sd = resnet_state("resnet50")
    sd["conv1.weight"] = torch.randn(64, channels, 7, 7, generator=torch.Generator().manual_seed(5))
    return sd


def init_first_conv(tmp_path, kind: str, channels: int, bands: list[str]):
    """(the file's first kernel, ours after --init, the report)."""
    model_name, key, dst = FIRST[kind]
    sd = state_with_channels(kind, channels)
    model = build_model(model_name, "paper", len(bands))
    report = load_pretrained(model, model_name, [save(sd, tmp_path / "w.safetensors")], bands)
    return sd[key], model.state_dict()[dst], report


@pytest.mark.parametrize("kind", list(FIRST))
def test_a_first_convolution_saved_for_our_bands_is_loaded_as_is(tmp_path, kind):
    theirs, ours, report = init_first_conv(tmp_path, kind, len(BAND_NAMES), list(BAND_NAMES))
    assert torch.equal(ours, theirs) and report.adapted == []


def test_twins_saved_for_our_bands_computes_what_it_computed(tmp_path):
    """Every stage of the encoder equals Twins-SVT-S with 11 input channels."""
    cfg = TWINS["paper"]
    sd = random_state(twins_shapes(**cfg, in_chans=len(BAND_NAMES)))
    model = build_model("lgt-unet", "paper", len(BAND_NAMES)).eval()
    load_pretrained(model, "lgt-unet", [save(sd, tmp_path / "w.pt")], list(BAND_NAMES))
    x = torch.randn(1, len(BAND_NAMES), 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for s, (a, b) in enumerate(zip(model.encoder(x), ref_twins_stages(sd, x, **cfg))):
            err = ((a - b).abs().max() / b.abs().max()).item()
            assert err < 1e-5, f"stage {s + 1}: relative error {err:.2e}"


@pytest.mark.parametrize("kind", list(FIRST))
@pytest.mark.parametrize("bands", ["ABCD", "C"])  # C: three bands, NDVI, NDSI and NDWI
def test_an_rgb_first_convolution_is_adapted_to_the_bands(tmp_path, kind, bands):
    """Three channels are RGB, also for a run of three bands."""
    names = parse_bands(bands)
    theirs, ours, report = init_first_conv(tmp_path, kind, 3, names)
    torch.testing.assert_close(ours, adapt_input_conv(theirs, names), rtol=0, atol=0)
    assert report.adapted == [FIRST[kind][1]]


@pytest.mark.parametrize("kind", list(FIRST))
@pytest.mark.parametrize("channels, bands", [(4, "ABCD"), (11, "ACD")])
def test_a_first_convolution_for_other_bands_is_refused(tmp_path, kind, channels, bands):
    model_name, key, dst = FIRST[kind]
    names = parse_bands(bands)
    model = build_model(model_name, "paper", len(names))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    k = tuple(before[dst].shape[2:])
    path = save(state_with_channels(kind, channels), tmp_path / "w.safetensors")
    with pytest.raises(InputError) as e:
        load_pretrained(model, model_name, [path], names)
    assert str(e.value) == (
        f"--init {path}: {key} is {(64, channels, *k)} in the file but {(64, len(names), *k)} "
        f"in --model {model_name}: its {channels} input channels are neither 3 (RGB, adapted "
        f"to the bands) nor the run's {len(names)} bands")
    assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())  # untouched


# -- UNetFormer's decoder block, from ../shared/MODEL.md ------------------------------------------------

def ref_lgcb(p: dict, x: torch.Tensor, heads: int = 8, w: int = 8) -> torch.Tensor:
    """x + GLA(BN(x)); x + MLP(BN(x)), with the reference's pooling and projection."""
    def bn(t, n):
        return F.batch_norm(t, p[n + ".running_mean"], p[n + ".running_var"], p[n + ".weight"],
                            p[n + ".bias"], False, 0.0, 1e-5)
    B, C, H, W = x.shape
    y = bn(x, "norm1")
    local = (bn(F.conv2d(y, p["attn.local1.0.weight"], padding=1), "attn.local1.1") +
             bn(F.conv2d(y, p["attn.local2.0.weight"]), "attn.local2.1"))
    q, k, v = F.conv2d(y, p["attn.qkv.weight"]).chunk(3, 1)
    table = p["attn.relative_position_bias_table"]
    out = torch.zeros(B, C, H, W)
    d = C // heads
    for i in range(0, H, w):
        for j in range(0, W, w):
            def win(t):
                return t[:, :, i:i + w, j:j + w].reshape(B, heads, d, w * w).transpose(-1, -2)
            logits = win(q) @ win(k).transpose(-1, -2) / math.sqrt(d)
            for a in range(w * w):  # relative position bias, one entry per (dy, dx)
                for b in range(w * w):
                    dy, dx = a // w - b // w + w - 1, a % w - b % w + w - 1
                    logits[:, :, a, b] += table[dy * (2 * w - 1) + dx]
            o = torch.softmax(logits, -1) @ win(v)
            out[:, :, i:i + w, j:j + w] = o.transpose(-1, -2).reshape(B, C, w, w)
    cols = F.avg_pool2d(F.pad(out, (0, 0, 0, 1), mode="reflect"), (w, 1), 1, (w // 2 - 1, 0),
                        count_include_pad=True)
    rows = F.avg_pool2d(F.pad(out, (0, 1, 0, 0), mode="reflect"), (1, w), 1, (0, w // 2 - 1),
                        count_include_pad=True)
    g = F.pad(cols + rows + local, (0, 1, 0, 1), mode="reflect")
    g = F.conv2d(g, p["attn.proj.0.weight"], padding=(w - 1) // 2, groups=C)
    g = F.conv2d(bn(g, "attn.proj.1"), p["attn.proj.2.weight"])
    x = x + g
    h = F.relu6(F.conv2d(bn(x, "norm2"), p["mlp.0.weight"], p["mlp.0.bias"]))
    return x + F.conv2d(h, p["mlp.2.weight"], p["mlp.2.bias"])


@pytest.mark.parametrize("size", [16, 32])
def test_decoder_block_equals_unetformer(size):
    from training.models.lgt_unet import LGCB

    block = LGCB(64, 8, 8).eval()
    p = random_state({k: tuple(v.shape) for k, v in block.state_dict().items()}, seed=3)
    block.load_state_dict(p)
    x = torch.randn(2, 64, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours, ref = block(x), ref_lgcb(p, x)
    assert ((ours - ref).abs().max() / ref.abs().max()).item() < 1e-5
