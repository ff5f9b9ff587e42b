"""User-facing errors.

Anything a user can cause (a bad path, an empty folder, a corrupt image, an invalid option) raises
:class:`UserError`. The CLI prints its message on one line and exits with status 2, never a traceback.
"""


class UserError(Exception):
    """An error caused by the user's input; its message is shown as is, on one line."""


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` for the CLI: ``gsimclr: warning: MESSAGE`` on one line, without the
    file, line number and source line of the code that warned (they mean nothing to a user)."""
    text = " ".join(str(message).split())
    name = "warning" if issubclass(category, UserWarning) else category.__name__
    return f"gsimclr: {name}: {text}\n"


def one_line_warnings():
    """Print warnings as :func:`one_line_warning`, each distinct user warning once per command however
    many code paths raise it (a skipped file is met by the loader of each stage); returns the function
    that restores the previous filters, format and display.

    The distinct messages are counted here, where they are shown: the ``"once"`` filter alone does not
    do it, since CPython's C implementation of ``warnings`` keeps "once" per module that warned (the
    same message from two callers, or with two ``stacklevel``s, was printed twice)."""
    import warnings

    saved = warnings.catch_warnings()
    saved.__enter__()
    previous_format, warnings.formatwarning = warnings.formatwarning, one_line_warning
    previous_show = warnings.showwarning
    warnings.filterwarnings("always", category=UserWarning)   # every one reaches `show_once`
    shown: set[tuple[type, str]] = set()

    def show_once(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning):
            key = (category, " ".join(str(message).split()))
            if key in shown:
                return
            shown.add(key)
        previous_show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_once

    def restore() -> None:
        warnings.formatwarning = previous_format
        saved.__exit__(None, None, None)   # restores showwarning and the filters

    return restore


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds like Ctrl-C: atomic writes remove their
    temporary files, the run folder's lock is released, and the exit is one line."""


def raise_terminated(signum, frame):
    """The SIGTERM handler of a command (and of each ``--jobs`` worker): raise :class:`Terminated`."""
    raise Terminated()
