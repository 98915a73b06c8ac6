"""QGIS layer styles (.qml) written beside the outputs, so that opening a file in QGIS shows it
as a glaciologist would draw it: QGIS loads `NAME.qml` by itself for `NAME.tif`,
`NAME.gpkg` or `NAME.parquet`.

- probability: a blue ramp that is faint and grey below the threshold and jumps to solid
  blue at it (the threshold is the ramp's labelled entry);
- outlines: glacier polygons graduated by `mean_probability` (confidence), pale to dark blue;
- change: stable ice, ice lost, ice gained (a paletted class raster).

The styles are built as data (`RampStop`, `Category`, `GraduatedClass`) and serialised by one
function each, in the QGIS 3 project format (`<qgis>` with a `pipe` for rasters and a
`renderer-v2` for vectors); symbol layer properties are written both as `<Option>` maps
(QGIS >= 3.26 reads these) and as `<prop>` pairs (older QGIS 3).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree as ET

from .atomic import write_text
from .layout import GLACIERS_QML, PROBABILITY_QML

QGIS_VERSION = "3.22.0"  # the oldest QGIS these files are written for (Debian 12's)
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"

# Change classes of change.tif (training/change_map.py writes them).
CHANGE_NONE, CHANGE_STABLE, CHANGE_LOST, CHANGE_GAINED, CHANGE_NODATA = 0, 1, 2, 3, 255


@dataclass(frozen=True)
class RampStop:
    value: float
    color: str  # #rrggbb
    alpha: int
    label: str


@dataclass(frozen=True)
class Category:
    value: int
    color: str
    alpha: int
    label: str


@dataclass(frozen=True)
class GraduatedClass:
    lower: float
    upper: float
    fill: str
    label: str


def probability_ramp(threshold: float) -> list[RampStop]:
    """The probability ramp: transparent at 0, faint grey up to the threshold, solid blue from
    it (the entry labelled 'threshold'), dark blue at 1."""
    below = max(threshold - 1e-3, 0.0)
    return [RampStop(0.0, "#ffffff", 0, "0"),
            RampStop(below, "#bdbdbd", 140, f"below {threshold:g}: not ice"),
            RampStop(threshold, "#6baed6", 255, f"{threshold:g}: threshold"),
            RampStop(1.0, "#08306b", 255, "1")]


CHANGE_CATEGORIES = [
    Category(CHANGE_STABLE, "#9ecae1", 255, "ice in both years (stable)"),
    Category(CHANGE_LOST, "#d7301f", 255, "ice lost"),
    Category(CHANGE_GAINED, "#1a9850", 255, "ice gained"),
]

CONFIDENCE_CLASSES = [
    GraduatedClass(0.0, 0.6, "#deebf7", "mean probability < 0.6"),
    GraduatedClass(0.6, 0.7, "#9ecae1", "0.6 - 0.7"),
    GraduatedClass(0.7, 0.8, "#6baed6", "0.7 - 0.8"),
    GraduatedClass(0.8, 0.9, "#3182bd", "0.8 - 0.9"),
    GraduatedClass(0.9, 1.0, "#08519c", "0.9 - 1.0"),
]
CONFIDENCE_FIELD = "mean_probability"


def write_prediction_styles(directory: Path, threshold: float) -> None:
    """probability.qml and glaciers.qml beside a prediction's files."""
    write_probability_qml(Path(directory) / PROBABILITY_QML, threshold)
    write_outlines_qml(Path(directory) / GLACIERS_QML)


def write_probability_qml(path: Path, threshold: float) -> None:
    """A pseudocolour style for band 1 of probability.tif, the threshold marked."""
    write_text(path, raster_pseudocolor_qml(probability_ramp(threshold), 0.0, 1.0))


def write_outlines_qml(path: Path) -> None:
    """Glacier polygons graduated by mean_probability."""
    write_text(path, graduated_fill_qml(CONFIDENCE_FIELD, CONFIDENCE_CLASSES))


def write_change_qml(path: Path) -> None:
    """change.tif's classes: stable, lost, gained (no change and no data transparent)."""
    write_text(path, raster_paletted_qml(CHANGE_CATEGORIES))


# -- serialisation -----------------------------------------------------------------------------

def raster_pseudocolor_qml(stops: Sequence[RampStop], vmin: float, vmax: float,
                           band: int = 1) -> str:
    root, pipe = _raster_root()
    r = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band=str(band),
                      opacity="1", alphaBand="-1", classificationMin=_num(vmin),
                      classificationMax=_num(vmax), nodataColor="")
    ET.SubElement(r, "rasterTransparency")
    mm = ET.SubElement(r, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"),
                      ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                      ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(mm, tag).text = text
    shader = ET.SubElement(ET.SubElement(r, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue=_num(vmin), maximumValue=_num(vmax),
                           labelPrecision="2")
    for s in stops:
        ET.SubElement(shader, "item", value=_num(s.value), color=s.color, alpha=str(s.alpha),
                      label=s.label)
    _raster_tail(pipe)
    return _serialise(root)


def raster_paletted_qml(categories: Sequence[Category], band: int = 1) -> str:
    root, pipe = _raster_root()
    r = ET.SubElement(pipe, "rasterrenderer", type="paletted", band=str(band), opacity="1",
                      alphaBand="-1", nodataColor="")
    ET.SubElement(r, "rasterTransparency")
    palette = ET.SubElement(r, "colorPalette")
    for c in categories:
        ET.SubElement(palette, "paletteEntry", value=str(c.value), color=c.color,
                      alpha=str(c.alpha), label=c.label)
    _raster_tail(pipe)
    return _serialise(root)


def graduated_fill_qml(field: str, classes: Sequence[GraduatedClass],
                       outline: str = "#08306b", opacity: float = 0.8) -> str:
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    rend = ET.SubElement(root, "renderer-v2", type="graduatedSymbol", attr=field,
                         graduatedMethod="GraduatedColor", symbollevels="0",
                         enableorderby="0", forceraster="0")
    ranges = ET.SubElement(rend, "ranges")
    symbols = ET.SubElement(rend, "symbols")
    for i, c in enumerate(classes):
        ET.SubElement(ranges, "range", lower=_num(c.lower), upper=_num(c.upper),
                      symbol=str(i), label=c.label, render="true")
        sym = ET.SubElement(symbols, "symbol", type="fill", name=str(i), alpha=_num(opacity),
                            clip_to_extent="1", force_rhr="0")
        layer = ET.SubElement(sym, "layer", {"class": "SimpleFill", "enabled": "1",
                                             "locked": "0", "pass": "0"})
        props = {"color": _rgba(c.fill), "outline_color": _rgba(outline),
                 "outline_style": "solid", "outline_width": "0.3",
                 "outline_width_unit": "MM", "style": "solid", "joinstyle": "bevel"}
        opts = ET.SubElement(layer, "Option", type="Map")
        for k, v in props.items():
            ET.SubElement(opts, "Option", type="QString", name=k, value=v)
        for k, v in props.items():
            ET.SubElement(layer, "prop", k=k, v=v)
    ET.SubElement(rend, "mode", name="fixed")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygons
    return _serialise(root)


def _raster_root() -> tuple[ET.Element, ET.Element]:
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    return root, ET.SubElement(root, "pipe")


def _raster_tail(pipe: ET.Element) -> None:
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", colorizeOn="0", colorizeRed="255",
                  colorizeGreen="128", colorizeBlue="128", colorizeStrength="100",
                  grayscaleMode="0", invertColors="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"


def _serialise(root: ET.Element) -> str:
    ET.indent(root)
    return DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n"


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-4 or v == 0 else repr(v)


def _rgba(color: str) -> str:
    """#rrggbb as QGIS writes colours in symbol properties: 'r,g,b,255'."""
    h = color.lstrip("#")
    return ",".join(str(int(h[i:i + 2], 16)) for i in (0, 2, 4)) + ",255"
