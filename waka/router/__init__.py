"""The router (data plane): HTTP/1.1 reverse proxy from `<app>.localhost` and custom domains to
web dynos, with Heroku's forwarded headers, error codes and router log lines."""

from waka.router.proxy import Router
from waka.router.table import Backend, Route, RouteTable

__all__ = ["Backend", "Route", "RouteTable", "Router"]
