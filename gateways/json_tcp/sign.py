"""Compute a logon proof by hand (for a session typed with nc):

python -m gateways.json_tcp.sign --secret S --salt SALT_B64 --iterations 4096 --nonce NONCE_B64
"""

from __future__ import annotations

import argparse
import base64

from gateways.accounts import make_proof


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m gateways.json_tcp.sign", description=__doc__)
    p.add_argument("--secret", required=True)
    p.add_argument("--salt", required=True, help="base64, from the challenge reply")
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--nonce", required=True, help="base64, from the challenge reply")
    a = p.parse_args()
    proof = make_proof(a.secret, base64.b64decode(a.salt), a.iterations, base64.b64decode(a.nonce))
    print(base64.b64encode(proof).decode())


if __name__ == "__main__":
    main()
