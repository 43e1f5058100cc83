"""The outbox channels: each message written as a JSON file in a folder, for demos and dry rehearsals.

They need no credentials, so the bundled demo runs anywhere, and they are the smallest complete
example of a channel plugin.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from outreach import hookimpl
from outreach.channel import (Channel, ConfigurationError, Delivery, OutgoingMessage,
                              TemplateField)
from outreach.settings import Setting
from outreach.sms import count_segments, segment_problems

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class _Outbox(Channel):
    settings: ClassVar[Mapping[str, Setting]] = {
        "path": Setting("path", help="folder the messages are written to (default outbox/NAME)"),
    }
    batch_size = 100

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        # The core resolves "path" against the project folder; the default is resolved likewise.
        self.folder = Path(self.config.get("path") or Path(self.config.get("project_root", ".")) / "outbox" / name)

    def _document(self, message: OutgoingMessage) -> dict[str, Any]:
        return {
            "key": message.key, "campaign": message.campaign, "category": message.category,
            "customer": message.customer_id, "to": message.address, "name": message.name,
            "locale": message.locale, **message.content,
        }

    def send(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        """Write each message as ``KEY.json``.

        A folder that cannot be made or written (permissions, a read-only or full disk, a file
        where the folder should be) is the deployment's problem, not the messages': a
        :class:`ConfigurationError`, raised for the call when nothing was written, else set on the
        messages left (the ones written are delivered).
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the outbox folder {self.folder}: "
                                     f"{exc.strerror or exc}", code="folder") from None
        out: list[Delivery] = []
        for i, message in enumerate(messages):
            doc = self._document(message)
            doc["written_at"] = datetime.now(timezone.utc).isoformat()
            target = self.folder / (_UNSAFE.sub("_", message.key) + ".json")
            try:
                self._write(target, doc)
            except OSError as exc:
                error = ConfigurationError(f"cannot write to the outbox folder {self.folder}: "
                                           f"{exc.strerror or exc}", code="folder")
                if not out:
                    raise error from None
                return out + [Delivery(m.key, error=error) for m in messages[i:]]
            out.append(Delivery(message.key, provider_id=target.name,
                                segments=doc.get("segments")))
        return out

    def _write(self, target: Path, doc: dict[str, Any]) -> None:
        # Write then rename, so a reader never sees half a message.
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, ensure_ascii=False, indent=2)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class OutboxEmail(_Outbox):
    """Email written to a folder: subject, plain text and HTML."""

    type_name = "outbox-email"
    address = "email"
    template_fields = {
        "subject": TemplateField(required=True, help="the subject line"),
        "body": TemplateField(help="plain-text body"),
        "html": TemplateField(help="HTML body"),
    }

    def check_campaign(self, fields: set[str], options: Mapping[str, Any],
                       category: str) -> list[str]:
        problems = super().check_campaign(fields, options, category)
        if not fields & {"body", "html"}:
            problems.append("body or html is required")
        return problems


class OutboxSMS(_Outbox):
    """SMS written to a folder, with its encoding and segment count."""

    type_name = "outbox-sms"
    address = "phone"
    template_fields = {"body": TemplateField(required=True, help="the text message")}
    campaign_options = {"max_segments": Setting("int", minimum=1, help="longest message allowed")}

    def check_rendered(self, content: Mapping[str, str], options: Mapping[str, Any]) -> list[str]:
        return segment_problems(content.get("body", ""), options.get("max_segments"))

    def _document(self, message: OutgoingMessage) -> dict[str, Any]:
        doc = super()._document(message)
        count = count_segments(message.content.get("body", ""))
        doc.update(encoding=count.encoding, segments=count.segments)
        return doc


@hookimpl
def outreach_register_channels(register):
    register(OutboxEmail)
    register(OutboxSMS)
