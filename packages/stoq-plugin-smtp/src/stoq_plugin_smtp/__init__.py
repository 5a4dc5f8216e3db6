"""stoQ's smtp worker: an e-mail message's headers, addresses and bodies, its attachments
extracted as payloads."""

from stoq_plugin_smtp.plugin import DEFAULT_BODY_LIMIT, SmtpPlugin, looks_like_email

__all__ = ["DEFAULT_BODY_LIMIT", "SmtpPlugin", "looks_like_email"]
