"""Buildpacks: compiling an app's source into what goes in its slug (the Heroku v2 contract)."""

from waka.buildpacks.errors import BuildError
from waka.buildpacks.procfile import ProcfileError, parse_procfile
from waka.buildpacks.release import ReleaseError, ReleaseInfo, parse_release
from waka.buildpacks.runner import STACK, CompileResult, clear_cache, compile_app
from waka.buildpacks.sources import BUILTINS, builtin_name

__all__ = [
    "BUILTINS",
    "STACK",
    "BuildError",
    "CompileResult",
    "ProcfileError",
    "ReleaseError",
    "ReleaseInfo",
    "builtin_name",
    "clear_cache",
    "compile_app",
    "parse_procfile",
    "parse_release",
]
