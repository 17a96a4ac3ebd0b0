"""One error family: every expected failure is a DigestError that names the thing at fault."""


class DigestError(Exception):
    """Base of every error digest raises on purpose; the CLI prints it as one line."""


class SettingsError(DigestError):
    """Raised when an environment setting is missing or invalid (names the variable)."""


class ConfigError(DigestError):
    """Raised when the newsletter file (digest.toml) is missing or invalid (names key and line)."""


class DatabaseError(DigestError):
    """Raised when the database cannot be opened or migrated."""


class SourceError(DigestError):
    """Raised when one source cannot be fetched or parsed (names the source)."""


class TemplateError(DigestError):
    """Raised when a template fails to load, render or compile (names the file and line)."""


class DeliveryError(DigestError):
    """Raised when a transport cannot deliver a message."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SubscriberError(DigestError):
    """Raised for a bad subscriber address, CSV row or unknown subscriber."""


class TokenError(DigestError):
    """Raised when a signed link token is forged, altered or malformed."""


class NotYetAvailable(DigestError):
    """Raised by a command whose capability is not built yet (names what is missing)."""


class TransportUnavailable(DeliveryError):
    """Raised when a transport cannot send anything (server unreachable): the send stops."""


class WebhookError(DigestError):
    """Raised when a provider webhook request is unsigned, badly signed, stale or malformed."""


class UnsendableAddress(DeliveryError):
    """Raised when one address cannot travel through a transport (that recipient fails alone)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class EditorError(DigestError):
    """Raised when an editor's decision cannot apply: a frozen edition, an unknown story or topic."""
