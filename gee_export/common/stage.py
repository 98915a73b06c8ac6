"""The contract every stage keeps with its output: one place that decides whether a command
reuses, resumes, refuses or redoes what is on disk, and says why in the same words.

A stage states what makes its product what it is (its parameters: inputs by identity, and
options) and where its manifest lies. Then `Stage.decide`:

- no manifest: start;
- the same parameters (or those an older version recorded for the same product): complete and
  intact, nothing to do; unfinished (or a damaged file), resume; `--force` starts afresh;
- other parameters: refused, each difference named as `option: old -> new`, unless `--force`
  (start afresh) or the stage says nothing would be lost (an output that finished nothing);
- a manifest that cannot be read: refused unless `--force`.

The stage takes its lock with `Stage.lock` (around deciding and writing), and marks itself
complete with `Stage.complete` as its last write, so that nothing half-made is taken for done.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .atomic import as_stored
from .errors import InputError, StateError
from .layout import DIRECTORY_MANIFESTS, now_iso, read_manifest, write_manifest

START, RESUME, DONE = "start", "resume", "done"


@dataclass(frozen=True)
class Decision:
    action: str  # START, RESUME or DONE
    old: dict | None = None  # the manifest found (RESUME, DONE)
    replaced: str = ""  # what a START replaces and why ("" when nothing was there)


def differences(old: Mapping, new: Mapping, names: Mapping[str, str] | None = None,
                ignore: Sequence[str] = (), prefix: str = "") -> list[str]:
    """Each parameter in which two records differ, as `option: old -> new`. Nested records
    are compared key by key; a key is shown as the option users write (`names`, where
    "parent.*" names every key of a nested record with {key} in its text, else
    --key-with-dashes), and `ignore`d keys may differ."""
    names = names or {}
    out = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if path in ignore or a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping) and path not in names:
            out += differences(a, b, names, ignore, f"{path}.")
            continue
        pattern = names.get(f"{prefix}*")
        option = names.get(path) or (pattern.format(key=key) if pattern else
                                     "--" + str(key).replace("_", "-"))
        if isinstance(a, bool) or isinstance(b, bool):  # a flag not recorded is off
            a, b = bool(a), bool(b)
        out.append(f"{option}: {shown(a)} -> {shown(b)}")
    return out


def shown(value: Any) -> str:
    """A recorded value as a user would read it: flags as on/off, long values cut."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    text = value if isinstance(value, str) else repr(value)
    if len(text) >= 32 and all(c in "0123456789abcdef" for c in text):  # a checksum
        return text[:12]
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Stage:
    """One product's manifest and how its stage speaks of it."""
    kind: str  # the manifest's kind ("export", "tiles", "run", "prediction", ...)
    manifest: Path  # where the manifest lies
    what: str = ""  # the product in messages: "tiles", "prediction", "report" [kind]
    names: Mapping[str, str] = field(default_factory=dict)  # parameter -> option users write
    ignore: Sequence[str] = ()  # parameters a resume may change (device, workers)
    hint: str = "use --force to replace it, or --name to make another beside it"
    verb: str = "is"  # "are" for a plural noun ("tiles ... are complete")
    key: str = "parameters"  # the manifest's record of them ("config" for a run)
    # How a recorded record compares with this command's (a run's: as it acts on the device).
    view: Callable[[dict], dict] | None = None

    @property
    def dir(self) -> Path:
        return self.manifest.parent

    @property
    def noun(self) -> str:
        return self.what or self.kind

    def read(self) -> dict | None:
        """The manifest, or None where there is none."""
        return read_manifest(self.manifest, self.kind) if self.manifest.is_file() else None

    def decide(self, parameters: dict, force: bool, echo: Callable[[str], None],
               earlier: Sequence[dict | None] = (),
               intact: Callable[[dict], str | None] | None = None,
               nothing_lost: Callable[[dict], str | None] | None = None,
               checked: Callable[[], str] | str = "") -> Decision:
        """Start, resume or nothing to do for `parameters` (see the module's text).
        `earlier`: other records of the same parameters (an older version's); `intact(old)`:
        what is wrong with a complete product's files, or None; `nothing_lost(old)`: why a
        product made otherwise may be replaced without --force (None: it may not); `checked`:
        what the "nothing to do" line adds (what was verified), or a function saying it after
        `intact`.

        Raises:
            StateError: a product made otherwise (each difference named), or a damaged
                manifest, without --force.
        """
        if not self.manifest.is_file():
            self.check_own()
            return Decision(START)
        try:
            old = read_manifest(self.manifest, self.kind)
        except InputError as e:
            if not force:
                raise StateError(f"{e}; rerun with --force to make it again") from None
            echo(f"--force: replacing {self.dir} (its manifest cannot be read)")
            return Decision(START, None, "unreadable")
        recorded = old.get(self.key) or {}
        recorded = self.view(recorded) if self.view else recorded
        params = as_stored(parameters)
        diff = ", ".join(differences(recorded, params, self.names, self.ignore))
        if not diff or recorded in [as_stored(e) for e in earlier if e is not None]:
            return self._same(old, force, echo, intact, checked)
        if force:
            echo(f"--force: replacing {self.dir} (made with {diff})")
            return Decision(START, old, diff)
        why = nothing_lost(old) if nothing_lost is not None else None
        if why:
            echo(f"replacing {self.dir} (made with {diff}): {why}")
            return Decision(START, old, diff)
        raise StateError(f"{self.dir} was made with other options ({diff}); {self.hint}")

    def check_own(self) -> None:
        """Refuse a product's directory that holds another product (its manifest), which
        this stage would write into or remove: a --name given to one kind of product that
        another kind already has.

        Raises:
            StateError: naming the other product and its manifest.
        """
        if self.manifest.name not in DIRECTORY_MANIFESTS:
            return  # a product inside another's directory (a report beside its prediction)
        for name, other in DIRECTORY_MANIFESTS.items():
            if name != self.manifest.name and (self.dir / name).is_file():
                raise StateError(f"{self.dir} holds a {other} ({name}), not this command's "
                                 f"{self.noun}; it is left as it is: give another --name")

    def _same(self, old: dict, force: bool, echo: Callable[[str], None],
              intact: Callable[[dict], str | None] | None,
              checked: Callable[[], str] | str) -> Decision:
        if force:
            echo(f"--force: making {self.dir} afresh")
            return Decision(START, old, "--force")
        if not old.get("complete"):
            return Decision(RESUME, old)
        problem = intact(old) if intact is not None else None
        if problem:
            echo(f"{self.noun} {self.dir}: {problem}; making that again")
            return Decision(RESUME, old)
        checked = checked() if callable(checked) else checked
        echo(f"{self.noun} {self.dir} {self.verb} complete{checked}; nothing to do")
        return Decision(DONE, old)

    def done_without_lock(self, parameters: dict, echo: Callable[[str], None],
                          earlier: Sequence[dict | None] = (),
                          intact: Callable[[dict], str | None] | None = None,
                          checked: Callable[[], str] | str = "") -> Decision | None:
        """The decision when the product is complete and intact for `parameters` with no
        unfinished file (said so); else None, for the locked pass to decide and say why.
        Reads only: a rerun on a read-only workspace needs nothing more."""
        from .atomic import has_partials

        said: list[str] = []
        try:
            decision = self.decide(parameters, False, said.append, earlier, intact,
                                   checked=checked)
        except (InputError, StateError):
            return None  # refused or unreadable: the locked pass says so
        if decision.action != DONE or has_partials(self.dir):
            return None
        echo(said[-1])
        return decision

    def unchanged(self, parameters: dict, earlier: Sequence[dict | None] = ()) -> str | None:
        """Why the product on disk is not one of `parameters` (its differences), or None:
        for a stage that only ever repairs what it made (`prep tile --verify`)."""
        old = self.read() or {}
        recorded, params = old.get(self.key) or {}, as_stored(parameters)
        if recorded in [as_stored(e) for e in earlier if e is not None]:
            return None
        return ", ".join(differences(recorded, params, self.names, self.ignore)) or None

    @contextmanager
    def lock(self, wait: bool, echo: Callable[[str], None]) -> Iterator[None]:
        """The output's lock, held while deciding and writing."""
        from .locks import output_lock

        with output_lock(self.dir, wait, echo):
            yield

    def complete(self, manifest: dict, **fields: Any) -> dict:
        """Mark the product complete: its manifest's last write."""
        manifest.update(fields, complete=True, completed_at=now_iso())
        write_manifest(self.manifest, manifest)
        return manifest
