"""What one API process holds: the run context, the URL signer and the player template."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request

from personalize.api.services import Urls, now_s
from personalize.api.signing import Signer, load_signing_secret
from personalize.context import Context

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@dataclass
class ApiState:
    ctx: Context
    signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        self.signer = Signer(load_signing_secret(self.ctx.settings))

    def urls(self, request: Request) -> Urls:
        return Urls(
            base_url=str(request.base_url).rstrip("/"),
            signer=self.signer,
            audio_ttl_s=self.ctx.settings.audio_url_ttl_s,
            now=now_s(),
        )

    @cached_property
    def _templates(self) -> jinja2.Environment:
        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=jinja2.StrictUndefined
        )

    def render_player(self, **values: Any) -> str:
        return self._templates.get_template("player.html").render(**values)
