"""Heroku's naming and size rules, as pure checks that raise clear domain errors."""

import re

from waka.domain.errors import InvalidParams

APP_NAME = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROCESS_TYPE = re.compile(r"^[-\w]{1,128}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
ADDON_NAME = re.compile(r"^[a-zA-Z][A-Za-z0-9_-]{0,254}$")
ATTACHMENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,99}$")

CONFIG_TOTAL_LIMIT = 32 * 1024  # bytes of all keys and values together, as on Heroku
CONFIG_KEY_LIMIT = 256
MAX_QUANTITY = 100

# Heroku's dyno sizes, in the spelling the API returns.
DYNO_SIZES = (
    "Eco",
    "Basic",
    "Standard-1X",
    "Standard-2X",
    "Performance-M",
    "Performance-L",
    "Performance-L-RAM",
)
DEFAULT_SIZE = "Standard-1X"
# Memory of each size, in MB, as on Heroku (the dyno's container gets this limit).
SIZE_MEMORY_MB = {
    "Eco": 512,
    "Basic": 512,
    "Standard-1X": 512,
    "Standard-2X": 1024,
    "Performance-M": 2560,
    "Performance-L": 14336,
    "Performance-L-RAM": 30720,
}
# CPU weight of each size (Docker's cpu-shares, 1024 = one share): relative, as Heroku's
# "compute" multipliers are; a busy dyno slows its neighbours only by its share.
SIZE_CPU_SHARES = {
    "Eco": 1024,
    "Basic": 1024,
    "Standard-1X": 1024,
    "Standard-2X": 2048,
    "Performance-M": 12288,
    "Performance-L": 51200,
    "Performance-L-RAM": 24576,
}
# Processes and threads a dyno may have at once, as on Heroku: a fork bomb stops there.
SIZE_PROCESSES = {
    "Eco": 256,
    "Basic": 256,
    "Standard-1X": 256,
    "Standard-2X": 512,
    "Performance-M": 16384,
    "Performance-L": 32768,
    "Performance-L-RAM": 32768,
}
DEFAULT_REGION = "local"
REGIONS = ("local",)
DEFAULT_STACK = "waka-bookworm"
STACKS = ("waka-bookworm",)


def check_app_name(name: object) -> str:
    if not isinstance(name, str) or not APP_NAME.fullmatch(name):
        raise InvalidParams(
            "Name must start with a letter, end with a letter or digit and can only contain "
            "lowercase letters, digits, and dashes; it must be 3 to 30 characters long."
        )
    return name


def check_config_changes(changes: object) -> dict[str, str | None]:
    """Validate a config-vars patch: keys by Heroku's pattern, values strings or null."""
    if not isinstance(changes, dict):
        raise InvalidParams("Config vars must be a JSON object of names to string values.")
    checked: dict[str, str | None] = {}
    for key, value in changes.items():
        if not isinstance(key, str) or not CONFIG_KEY.fullmatch(key) or len(key) > CONFIG_KEY_LIMIT:
            raise InvalidParams(
                f"Invalid config var name {key!r}: names must start with a letter or underscore, "
                f"contain only letters, digits and underscores, and be at most "
                f"{CONFIG_KEY_LIMIT} characters."
            )
        if value is not None and not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidParams(
                    f"Invalid value for config var {key}: expected a string or null."
                )
            value = str(value)  # Heroku coerces numbers to strings
        if value is not None and "\x00" in value:
            # execve() ends a variable at the first NUL: such a value would be released and
            # then keep every dyno from starting.
            raise InvalidParams(
                f"Invalid value for config var {key}: it contains a NUL character (\\u0000), "
                "which an environment variable cannot hold."
            )
        checked[key] = value
    return checked


def check_config_size(config: dict[str, str]) -> None:
    total = sum(len(k.encode()) + len(v.encode()) for k, v in config.items())
    if total > CONFIG_TOTAL_LIMIT:
        raise InvalidParams(
            f"Config vars would total {total} bytes; the limit is {CONFIG_TOTAL_LIMIT} bytes "
            "for all names and values together."
        )


def check_process_type(process_type: object) -> str:
    if not isinstance(process_type, str) or not PROCESS_TYPE.fullmatch(process_type):
        raise InvalidParams(
            f"Invalid process type {process_type!r}: use letters, digits, dashes and "
            "underscores (at most 128)."
        )
    return process_type


QUANTITY = re.compile(r"^[+-]?\d{1,6}$")


def check_quantity(quantity: object, current: int = 0) -> int:
    """A whole number, or a string of one; "+N"/"-N" change the current quantity (the Heroku
    CLI sends `ps:scale web+1` that way)."""
    if isinstance(quantity, str) and QUANTITY.fullmatch(quantity.strip()):
        text = quantity.strip()
        quantity = current + int(text) if text[0] in "+-" else int(text)
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidParams(f"Invalid quantity {quantity!r}: give a whole number like 2 or +1.")
    if not 0 <= quantity <= MAX_QUANTITY:
        raise InvalidParams(f"Quantity must be between 0 and {MAX_QUANTITY}.")
    return quantity


def check_size(size: object) -> str:
    if isinstance(size, str):
        for known in DYNO_SIZES:
            if known.lower() == size.lower():
                return known
    raise InvalidParams(f"Invalid dyno size {size!r}; choose one of: {', '.join(DYNO_SIZES)}.")


def check_region(region: object) -> str:
    if region not in REGIONS:
        raise InvalidParams(f"Couldn't find that region. Regions here: {', '.join(REGIONS)}.")
    return str(region)


def check_stack(stack: object) -> str:
    if stack not in STACKS:
        raise InvalidParams(f"Couldn't find that stack. Stacks here: {', '.join(STACKS)}.")
    return str(stack)


def check_email(email: object) -> str:
    if not isinstance(email, str) or not EMAIL.fullmatch(email) or len(email) > 254:
        raise InvalidParams(f"Invalid email address {email!r}.")
    return email.lower()


DRAIN_SCHEMES = ("https", "http", "syslog", "syslog+tls")


def check_drain_url(url: object) -> str:
    """Log drains: HTTPS (Logplex's HTTP drain format) or syslog over TCP, with or without TLS."""
    from urllib.parse import urlparse

    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in DRAIN_SCHEMES or not parsed.hostname:
        raise InvalidParams(
            f"Invalid log drain URL {url!r}: use https://host/path or syslog+tls://host:port "
            "(also http:// and syslog://)."
        )
    if parsed.scheme.startswith("syslog") and not parsed.port:
        raise InvalidParams(f"Syslog drain {url} needs a port.")
    return url


HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def check_hostname(hostname: object) -> str:
    if not isinstance(hostname, str) or not HOSTNAME.fullmatch(hostname.lower().rstrip(".")):
        raise InvalidParams(
            f"Invalid domain name {hostname!r}: give a hostname like www.example.com."
        )
    return hostname.lower().rstrip(".")


def check_addon_name(name: object) -> str:
    if not isinstance(name, str) or not ADDON_NAME.fullmatch(name):
        raise InvalidParams(
            "Add-on names must start with a letter and can only contain letters, digits, "
            "dashes and underscores (at most 255)."
        )
    return name


def check_attachment_name(name: object) -> str:
    """An attachment's name prefixes its config vars (DATABASE -> DATABASE_URL)."""
    if isinstance(name, str):
        name = name.strip().upper().replace("-", "_")
    if not isinstance(name, str) or not ATTACHMENT_NAME.fullmatch(name):
        raise InvalidParams(
            f"Invalid attachment name {name!r}: use letters, digits and underscores, "
            "starting with a letter (it becomes the config var prefix, as in DATABASE_URL)."
        )
    return name
