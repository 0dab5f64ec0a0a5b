"""SHACL validation of HealthDCAT-AP records with pySHACL, offline, at the record's access level.

The shapes are the HealthDCAT-AP Release 8 validator's (``config.properties``
lists the files of each level). Three things make them usable with pySHACL and
without the internet, all done here in memory (the shape files are never edited):

- One property shape of ``:Dataset_Shape`` in each level file has an ``sh:or``
  but no ``sh:path`` ("if hasStructuredData is true, hasVariables is needed").
  pySHACL rejects a property shape without a path, so its constraints move onto
  a new node shape with the same target.
- The controlled-vocabulary shapes check ``skos:inScheme`` *of the value*, so the
  vocabularies must be in the data graph (``ont_graph`` is only mixed in for
  RDFS/OWL inference, which is off here). Those present in the validator copy
  are merged; for the ones the copy lacks, ``vocabulary_standins.ttl`` asserts
  only the scheme membership of the few concepts the records use (see
  docs/catalogue.md for exactly what that does and does not check).
- ``owl:imports`` are never followed (no download); the DCAT-AP 3.0 base shapes
  they point to are therefore not applied, and ``sh:extends :Agent_Shape`` (not
  SHACL core) is ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path

from rdflib import BNode, Graph, Literal, Namespace
from rdflib.namespace import RDF, SH

VALIDATOR_ENV_VAR = "HDH_HEALTHDCAT_VALIDATOR"
# The reference copy beside the repository (../shared); production sets HDH_HEALTHDCAT_VALIDATOR.
DEFAULT_VALIDATOR_DIR = Path(__file__).resolve().parents[3] / "shared/reference/healthdcat-ap/validator"
STANDINS = Path(__file__).with_name("vocabulary_standins.ttl")
HDH = Namespace("urn:hdh:catalogue:shacl#")


class AccessLevel(Enum):
    """The validator's levels, named after the access-right concept a record must carry."""

    PUBLIC = "public"
    NON_PUBLIC = "non-public"
    RESTRICTED = "restricted"


# config.properties: validator.shaclFile.<level>, minus deprecated/deprecateduris.ttl which the copy lacks
# (it only flags deprecated URIs; none of ours is).
def _shape_files(level: AccessLevel) -> tuple[str, ...]:
    return (
        "shapes/graph-guard.ttl",
        "imports/mdr_imports.ttl",
        "imports/imports.ttl",
        "ranges/range.ttl",
        f"shapes/{level.value}-shapes.ttl",
        "controlled-vocabularies/mdr-vocabularies.shape.ttl",
        f"recommended/{level.value}-shapes_recommended.ttl",
    )


# Vocabularies of the validator's catalogue/ folder that the copy holds; the others are stood in for.
VOCABULARY_FILES = ("catalogue/healthcategories.rdf", "catalogue/distribution-status.rdf")


class ValidatorNotFound(FileNotFoundError):
    """The HealthDCAT-AP validator folder is missing a file; ``reason`` is machine-readable."""

    reason = "shacl_validator_missing"


@dataclass(frozen=True)
class ShaclFinding:
    severity: str  # Violation, Warning or Info
    focus: str
    path: str
    message: str


@dataclass(frozen=True)
class ShaclResult:
    level: AccessLevel
    findings: tuple[ShaclFinding, ...]

    @property
    def violations(self) -> tuple[ShaclFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "Violation")

    @property
    def warnings(self) -> tuple[ShaclFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "Warning")

    @property
    def conforms(self) -> bool:
        return not self.violations


def validator_dir() -> Path:
    return Path(os.environ.get(VALIDATOR_ENV_VAR) or DEFAULT_VALIDATOR_DIR)


def _parse(graph: Graph, path: Path) -> None:
    if not path.is_file():
        raise ValidatorNotFound(
            f"The HealthDCAT-AP validator file {path} is missing; set {VALIDATOR_ENV_VAR}."
        )
    graph.parse(path, format="xml" if path.suffix == ".rdf" else "turtle")


def _lift_pathless_property_shapes(shapes: Graph) -> None:
    """Move each property shape that has no sh:path onto a new node shape with its parent's targets."""
    for parent, prop in list(shapes.subject_objects(SH.property)):
        if (prop, SH.path, None) in shapes:
            continue
        lifted = HDH[f"lifted-{len(list(shapes.subjects(RDF.type, SH.NodeShape)))}"]
        shapes.add((lifted, RDF.type, SH.NodeShape))
        for target_kind in (SH.targetClass, SH.targetNode, SH.targetSubjectsOf, SH.targetObjectsOf):
            for target in shapes.objects(parent, target_kind):
                shapes.add((lifted, target_kind, target))
        for predicate, value in list(shapes.predicate_objects(prop)):
            shapes.add((lifted, predicate, value))
        shapes.remove((parent, SH.property, prop))


@cache
def _shapes(folder: Path, level: AccessLevel) -> Graph:
    shapes = Graph()
    for name in _shape_files(level):
        _parse(shapes, folder / name)
    _lift_pathless_property_shapes(shapes)
    return shapes


@cache
def _vocabularies(folder: Path) -> Graph:
    vocabularies = Graph()
    for name in VOCABULARY_FILES:
        _parse(vocabularies, folder / name)
    vocabularies.parse(STANDINS, format="turtle")
    return vocabularies


def _text(node: object) -> str:
    if node is None:
        return ""
    if isinstance(node, BNode):
        return "(blank node)"
    return str(node)


def _findings(report: Graph) -> Iterable[ShaclFinding]:
    # Only the report's own results: those of shapes reached through sh:node are nested under sh:detail
    # and decide nothing by themselves (their parent result carries the severity).
    for result in report.objects(None, SH.result):
        severity = report.value(result, SH.resultSeverity)
        message = report.value(result, SH.resultMessage)
        yield ShaclFinding(
            severity=str(severity).rsplit("#", 1)[-1] if severity is not None else "Violation",
            focus=_text(report.value(result, SH.focusNode)),
            path=_text(report.value(result, SH.resultPath)),
            message=str(message) if isinstance(message, Literal) else _text(message),
        )


def validate(data: Graph, level: AccessLevel, folder: Path | None = None) -> ShaclResult:
    """Validate ``data`` (one or more records) against the shapes of ``level``; never touches the network."""
    # pySHACL is imported by a validation, not by every process that loads the code location (the
    # catalogue's model imports AccessLevel from here).
    import pyshacl

    folder = (folder or validator_dir()).resolve()
    merged = Graph()
    for triple in data:
        merged.add(triple)
    for triple in _vocabularies(folder):
        merged.add(triple)
    _conforms, report, _text_report = pyshacl.validate(
        merged,
        shacl_graph=_shapes(folder, level),
        inference="none",
        advanced=True,
        do_owl_imports=False,
        allow_warnings=True,
    )
    findings = sorted(_findings(report), key=lambda f: (f.severity, f.focus, f.path, f.message))
    return ShaclResult(level=level, findings=tuple(findings))


__all__ = [
    "AccessLevel",
    "ShaclFinding",
    "ShaclResult",
    "ValidatorNotFound",
    "validate",
    "validator_dir",
]
