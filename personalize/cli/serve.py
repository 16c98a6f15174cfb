"""``personalize serve`` and ``personalize apikey create|revoke|list``: thin calls into the API package."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

console = Console()
apikey_app = typer.Typer(
    help="API keys for the app backend (shown once, stored hashed, revocable).", no_args_is_help=True
)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, min=1, help="Worker processes (about one per CPU core)."),
    log_level: str = typer.Option("warning", help="uvicorn log level: debug, info, warning, error."),
) -> None:
    """Run the app backend API (OpenAPI docs at /docs) on PERSONALIZE_DATABASE_URL and storage."""
    import os
    import sys

    from personalize.api.signing import load_signing_secret
    from personalize.config import get_settings

    settings = get_settings()
    load_signing_secret(settings)  # create it once here, before the workers race to
    if "public_base_url" not in settings.model_fields_set:
        # Signed audio URLs point where this server listens, unless the operator names the public address.
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        os.environ["PERSONALIZE_PUBLIC_BASE_URL"] = f"http://{shown_host}:{port}"
        if shown_host != host:
            console.print(
                "[yellow]signed audio URLs will point at "
                f"{os.environ['PERSONALIZE_PUBLIC_BASE_URL']}[/]: set PERSONALIZE_PUBLIC_BASE_URL to the "
                "address clients reach this server at"
            )
    console.print(
        f"[green]serving[/] http://{host}:{port}  (docs: /docs, workers: {workers}, "
        f"signed URLs on {os.environ.get('PERSONALIZE_PUBLIC_BASE_URL', settings.public_base_url)})"
    )
    # Exec uvicorn's own entry point rather than calling uvicorn.run from here: each worker is a spawned
    # process that re-imports the parent's main module, and this CLI module pulls in every stage's
    # commands, which would slow worker start past uvicorn's health check under load.
    args = [
        sys.executable, "-m", "uvicorn", "personalize.api.app:create_app_from_env", "--factory",
        "--host", host, "--port", str(port), "--workers", str(workers), "--log-level", log_level,
        "--no-access-log", "--proxy-headers", "--timeout-worker-healthcheck", "30",
    ]  # fmt: skip
    os.execv(sys.executable, args)


@apikey_app.command("create")
def apikey_create(
    name: str = typer.Argument(..., help="Who or what uses the key, e.g. 'ios-app-backend'."),
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from personalize.api.keys import create_key
    from personalize.context import make_context

    created = create_key(make_context(), name)
    console.print(
        f"API key for [bold]{created.name}[/] (prefix {created.prefix}); store it now, it is not shown again:"
    )
    print(created.key)


@apikey_app.command("revoke")
def apikey_revoke(
    prefix: str = typer.Argument(..., help="The key's prefix as `apikey list` shows it."),
) -> None:
    """Revoke a key at once; requests with it are refused from now on."""
    from personalize.api.keys import revoke_key
    from personalize.context import make_context

    try:
        info = revoke_key(make_context(), prefix)
    except (ValueError, LookupError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"revoked {info.prefix} ({info.name}) at {info.revoked_at:%Y-%m-%d %H:%M:%S}")


@apikey_app.command("list")
def apikey_list() -> None:
    """Every key with its name, prefix, creation and revocation time (never the key itself)."""
    from personalize.api.keys import list_keys
    from personalize.context import make_context

    table = Table("prefix", "name", "created", "revoked")
    for info in list_keys(make_context()):
        table.add_row(
            info.prefix,
            info.name,
            f"{info.created_at:%Y-%m-%d %H:%M}" if info.created_at else "",
            f"{info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(apikey_app, name="apikey")
