"""A real SMTP server for Skywarden's email tests, built on aiosmtpd (PyPI).

It requires STARTTLS before anything else, then AUTH (user `skywarden`, password
`smtp-test-password`), and writes each accepted message as a JSON file in the output folder:
envelope sender and recipients, the raw message, whether TLS was on and who logged in.

Usage: python3 smtp_sink.py PORT OUTPUT_DIR CERT KEY
It prints "ready" once listening, and stops when its standard input closes (its parent died).
"""

import json
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = b"skywarden"
PASSWORD = b"smtp-test-password"


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir

    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "authenticated_as": session.auth_data.decode() if session.authenticated else None,
        }
        name = "%d-%d" % (time.time_ns(), os.getpid())
        temporary = os.path.join(self.out_dir, name + ".tmp")
        with open(temporary, "w") as handle:
            json.dump(record, handle)
        os.rename(temporary, os.path.join(self.out_dir, name + ".json"))
        return "250 OK queued as " + name


def authenticate(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword) and auth_data.login == USER and auth_data.password == PASSWORD:
        return AuthResult(success=True, auth_data=auth_data.login)
    return AuthResult(success=False, handled=False)


def main():
    port, out_dir, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        Sink(out_dir),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
