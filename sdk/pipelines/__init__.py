"""Pipelines: validating generated JSON (`validate`) and typed generation over many prompts (`LLM.map`, `stencil run`)."""

from sdk.pipelines.mapping import MapResult
from sdk.pipelines.validate import ValidationReport, Validator, Violation, validate

__all__ = ["MapResult", "ValidationReport", "Validator", "Violation", "validate"]
