"""``car-runtime web-password``: set or reset the web cockpit's password.

The file holds a salted scrypt hash (mode 0600, written atomically). A change takes effect at
once (no restart) and ends the sessions opened with the old password. Examples::

    sudo car-runtime web-password                       # asks twice (default file)
    sudo car-runtime web-password --generate --owner car-runtime
    echo 'a long passphrase' | car-runtime web-password --file ./web-password --stdin
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web-password",
        help="set or reset the web cockpit password",
        description=__doc__.replace("``", "").replace("::\n", ":\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--file", metavar="PATH",
                   help="password file (default: web_password_file of --config, else "
                        "/var/lib/car-runtime/web-password)")
    p.add_argument("--config", metavar="FILE", help="read web_password_file from this YAML config")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--generate", action="store_true",
                     help="make a random password and print it once")
    how.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--owner", metavar="USER",
                   help="give the file to this user (the service user; needs root)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import getpass

    from car_runtime.config import RunConfig, resolve
    from car_runtime.errors import ConfigError
    from car_runtime.web.auth import create_password_file, write_password_file

    path = args.file or (resolve(args.config, {}) if args.config else RunConfig()).web_password_file
    if args.generate:
        password = create_password_file(path, owner=args.owner)
        print(f"web password saved to {path} (mode 0600); the new password is:\n\n    {password}\n")
        print("It is shown only this once. Open sessions with the old password have ended.")
        return 0
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise ConfigError("no terminal to ask for the password; use --stdin or --generate")
        password = getpass.getpass("new web cockpit password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ; nothing changed")
    write_password_file(path, password, owner=args.owner)
    print(f"web password saved to {path} (mode 0600). Open sessions with the old password have ended.")
    return 0
