"""Test helpers: a one-validator testnet written to a directory, as a node home expects it.

Independent of `node/testnet.py`: keys are fresh (`SigningKey.generate()`), the genesis
names four organisations (notary, taxoffice, enterprise-a, enterprise-b) with one admin
and one member key each, and validator 0 belongs to the notary.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from contracts.membership import OrganizationSpec
from node.config import NodeConfig, default_config
from node.crypto import SigningKey, write_key_file
from node.genesis import Validator, genesis_document
from node.transaction import Transaction, sign_transaction

CHAIN_ID: Final = "chancery-helpers"
ORG_ROLES: Final[dict[str, tuple[str, ...]]] = {
    "notary": ("notary",),
    "taxoffice": ("tax_office",),
    "enterprise-a": ("enterprise",),
    "enterprise-b": ("enterprise",),
}
API_PORT: Final = 18600  # written to the config only; tests serve on their own port
P2P_PORT: Final = 19600


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LocalTestnet:
    """A generated network directory: `genesis.json` and the home of node 0."""

    directory: Path
    home: Path
    chain_id: str
    genesis_raw: bytes
    admins: dict[str, SigningKey]
    members: dict[str, SigningKey]
    validator_key: SigningKey

    @property
    def genesis_path(self) -> Path:
        return self.directory / "genesis.json"

    def config(self, **api_settings: Any) -> NodeConfig:
        """Node 0's config, with `[api]` settings overridden as given."""
        config = default_config(0, API_PORT, P2P_PORT, [], home=self.home)
        if not api_settings:
            return config
        return dataclasses.replace(config, api=dataclasses.replace(config.api, **api_settings))

    def sign(
        self,
        key: SigningKey,
        contract: str,
        method: str,
        args: dict[str, Any],
        *,
        nonce: int | None = None,
        chain_id: str | None = None,
    ) -> Transaction:
        """A signed transaction; a random nonce unless given, the current time."""
        return sign_transaction(
            key,
            chain_id or self.chain_id,
            contract,
            method,
            args,
            int.from_bytes(os.urandom(8), "big") if nonce is None else nonce,
            now_ms(),
        )

    def add_member(
        self, key: SigningKey | None = None, public_key: bytes | None = None, **options: Any
    ) -> Transaction:
        """`membership.add_member` of a fresh (or given) key, by the notary admin by default."""
        return self.sign(
            key or self.admins["notary"],
            "membership",
            "add_member",
            {"public_key": public_key or os.urandom(32), "name": "member"},
            **options,
        )


def create_testnet(directory: Path, chain_id: str = CHAIN_ID) -> LocalTestnet:
    """Write `genesis.json` and node 0's home (`node0/node.key`) under `directory`."""
    admins = {org: SigningKey.generate() for org in ORG_ROLES}
    members = {org: SigningKey.generate() for org in ORG_ROLES}
    validator_key = SigningKey.generate()
    orgs = [
        OrganizationSpec(
            id=org,
            name=org.title(),
            roles=roles,
            admins=(admins[org].public_key,),
            members=(members[org].public_key,),
        )
        for org, roles in ORG_ROLES.items()
    ]
    validators = [Validator(0, "notary", validator_key.public_key)]
    genesis_raw = genesis_document(chain_id, now_ms(), orgs, validators)
    home = directory / "node0"
    home.mkdir(parents=True)
    (directory / "genesis.json").write_bytes(genesis_raw)
    write_key_file(home / "node.key", validator_key)
    return LocalTestnet(directory, home, chain_id, genesis_raw, admins, members, validator_key)
