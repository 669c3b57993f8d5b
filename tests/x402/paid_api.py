"""A paid HTTP API for spendguard's x402 tests, built only from the official x402 Python SDK.

Its FastAPI middleware protects GET /weather at a price in an EIP-3009 token; its `exact` EVM
facilitator, in this process, verifies each payment and settles it on the local chain with the
facilitator's own key. Nothing here is spendguard's: the test proves that what spendguard signs
is what the SDK accepts and settles.

usage: paid_api.py RPC_URL CHAIN_ID FACILITATOR_KEY TOKEN PAY_TO PRICE_BASE_UNITS
Listens on a free port of 127.0.0.1 and prints "listening on PORT"; stops on SIGTERM.
"""

import socket
import sys

import uvicorn
from fastapi import FastAPI
from x402 import x402Facilitator, x402ResourceServer
from x402.http.middleware.fastapi import payment_middleware
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme


def main() -> None:
    rpc, chain_id, facilitator_key, token, pay_to, price = sys.argv[1:7]
    network = f"eip155:{chain_id}"

    facilitator = x402Facilitator()
    signer = FacilitatorWeb3Signer(private_key=facilitator_key, rpc_url=rpc)
    facilitator.register([network], ExactEvmFacilitatorScheme(signer))

    server = x402ResourceServer(facilitator)
    server.register(network, ExactEvmServerScheme())

    routes = {
        "GET /weather": {
            "accepts": {
                "scheme": "exact",
                "payTo": pay_to,
                "price": {"amount": price, "asset": token, "extra": {"name": "USD Coin", "version": "2"}},
                "network": network,
                "maxTimeoutSeconds": 120,
            },
            "description": "Today's weather",
            "mimeType": "application/json",
        }
    }

    app = FastAPI()
    app.middleware("http")(payment_middleware(routes, server))

    @app.get("/weather")
    async def weather() -> dict:
        return {"forecast": "sunny", "temperature_c": 21}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
