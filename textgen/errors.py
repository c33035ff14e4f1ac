"""The one exception type that means "the user asked for something we cannot do"."""


class TextgenError(Exception):
    """A user mistake or an unusable input: the CLI prints it as one line and exits with 2."""


class TextgenWarning(UserWarning):
    """Something the user should know (shown once, as one `textgen: warning:` line by the CLI)."""


class TextgenNote(TextgenWarning):
    """Worth one line, not a concern (shown as a `textgen: note:` line by the CLI)."""
