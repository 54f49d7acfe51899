"""Every error the build reports to a user, and the CLI's exit code for each (Make-friendly).

0 ok; 1 bad config (also a ``--from-step`` that cannot resume); 2 build error (also an
output_dir that is a file, read-only or full); 3 verification mismatch; 4 not all-RTL;
5 does not fit the part; 6 a Vivado / Vitis HLS step on a machine without them.
"""
from __future__ import annotations

from brevitas_models.config import ConfigError

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_BUILD = 2
EXIT_VERIFY = 3
EXIT_NOT_RTL = 4
EXIT_NO_FIT = 5
EXIT_NO_VIVADO = 6


class BuildConfigError(ConfigError):
    """A build config value is missing, unknown, or out of range."""


class ResumeError(BuildConfigError):
    """--from-step cannot continue this build directory (the message says why and what to
    run instead); exit 1 like a config error. Raised before anything is changed."""


class BuildError(RuntimeError):
    """A build step failed for a reason the user must act on (message says what)."""

    exit_code = EXIT_BUILD


class OutputDirError(BuildError):
    """The build directory cannot be written (a file, read-only, full)."""


class NotAllRTLError(BuildError):
    exit_code = EXIT_NOT_RTL

    def __init__(self, msg: str, offending: list[dict]):
        self.offending = offending
        lines = "\n".join(f"  - {o['name']} ({o['op_type']}, backend: {o['backend']})"
                          for o in offending)
        super().__init__(f"{msg}\n{lines}\nFix: change the model (e.g. strided convolutions "
                         "instead of pooling), or set allow_hls: true and build with Vivado + "
                         "Vitis HLS (make build-bitstream); the Vivado-free RTL simulation "
                         "covers RTL nodes only.")


class DoesNotFitError(BuildError):
    exit_code = EXIT_NO_FIT


class VivadoRequiredError(BuildError):
    """A step needs AMD Vivado / Vitis HLS (or FINN's board files / HLS library) that this
    machine does not have; everything before the step is built and kept."""

    exit_code = EXIT_NO_VIVADO


class VerificationError(RuntimeError):
    """A verification stage's outputs differ from the references (``record`` has them)."""

    exit_code = EXIT_VERIFY

    def __init__(self, stage: str, record: dict):
        self.stage = stage
        self.record = record
        imgs = record.get("mismatch_images", [])
        outs = record.get("mismatch_outputs", [])
        super().__init__(
            f"verification FAILED at stage '{stage}': {len(imgs)} image(s) differ "
            f"(first: {imgs[:5]}), output indices {outs} "
            f"({', '.join(record.get('mismatch_tasks', []))}); "
            f"max |logit diff| {record.get('max_abs_logit_diff')}, "
            f"max |acc diff| {record.get('max_abs_acc_diff')}")


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    return getattr(exc, "exit_code", EXIT_BUILD)
