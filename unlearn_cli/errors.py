"""The one exception type for bad user input: reported as a single line, exit code 2."""


class UserError(Exception):
    """A problem with the user's input (config, names, files) that is knowable before any work."""

    exit_code = 2
    # Whether the run's folder holds something the message tells the user to read (it is
    # then kept; otherwise a run refused before it began leaves no folder).
    keeps_folder = False


class RequestRefused(UserError):
    """The run refused its request as asked (request.copies=refuse); the folder keeps the
    file that says why (copies.csv)."""

    keeps_folder = True


class TrainingDiverged(UserError):
    """Training produced a non-finite loss: nothing it made is kept or cached (exit code 3)."""

    exit_code = 3


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (its type name if it has none)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


class WriteFailed(UserError):
    """A file or folder could not be written (disk full, no permission): exit code 4.

    Raised with one line naming what was being written, where, and about how much room it needs;
    the atomic writers leave nothing partial behind.
    """

    exit_code = 4
