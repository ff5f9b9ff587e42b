"""User-facing errors.

Anything a user can cause (a bad path, an empty folder, a corrupt image, an invalid option) raises
:class:`UserError`. The CLI prints its message on one line and exits with status 2, never a traceback.
"""

import re


class UserError(Exception):
    """An error caused by the user's input; its message is shown as is, on one line."""


def printable(name) -> str:
    """``name`` (a file name) fit for a one-line message: a newline or other control character is escaped as
    Python writes it (a name with a newline cut the message at it), and a byte that is not UTF-8 (a lone
    surrogate from the file system) as ``\\xNN``.

    >>> printable("a\\nb.jpg"), printable("caf\\udce9.png"), printable("ünï code.png")
    ('a\\\\nb.jpg', 'caf\\\\xe9.png', 'ünï code.png')
    """
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else repr(c)[1:-1] for c in text)


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


def out_of_memory(exc: BaseException) -> str | None:
    """The one-line message of an allocation that failed because the options ask for more memory than the
    machine has (numpy's ``MemoryError``, PyTorch's CPU allocator or ``OutOfMemoryError`` on a GPU), else
    None. Such a failure is the options', not a bug: e.g. ``--head-dims 1000000000000``, a ``--cache-size``
    whose decoded images outgrow memory, a batch too large for the GPU.

    >>> out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
    ...                            "you tried to allocate 4000 bytes."))[:60]
    "out of memory (DefaultCPUAllocator: can't allocate memory: y"
    >>> out_of_memory(RuntimeError("shape mismatch")) is None
    True
    """
    text = " ".join(str(exc).split("\n")[0].split())
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        pass
    elif not (isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())):
        return None
    text = re.sub(r"^\[enforce fail[^\]]*\]\s*(err == 0\.\s*)?", "", text)   # PyTorch's C++ prefix
    detail = text[:200] or type(exc).__name__
    return (f"out of memory ({detail}): the options ask for more memory than this machine has; give a smaller "
            f"--batch-size, --image-size, --cache-size, --head-dims or model")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds like Ctrl-C: atomic writes remove their
    temporary files, the run folder's lock is released, and the exit is one line."""


def raise_terminated(signum, frame):
    """The SIGTERM handler of a command (and of each ``--jobs`` worker): raise :class:`Terminated`."""
    raise Terminated()
