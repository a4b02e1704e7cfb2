"""The `lottery` contract (CONTRACTS.md, lottery) through the real execution path, the
draw against the published test vectors (docs/lottery.md), its statistics, and entries'
audit paths against node/merkle.py."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from contracts import lottery, lottery_draw, rfc6962
from node import lottery_cli, merkle, verifier
from node.block import Receipt

if TYPE_CHECKING:
    from tests.contract_harness import ContractHarness
from tests.contract_harness import ContractHarness
from tests.unit.conftest import Consortium

PROJECT = "draw-2026"
SPONSOR = "enterprise-a"
NOTARY = "notary"
OUTSIDER = "enterprise-b"


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


SPONSOR_SECRET = sha("sponsor secret")
NOTARY_SECRET = sha("notary secret")


def entries(first: int, count: int) -> list[bytes]:
    return [sha(f"salt|participant {n}") for n in range(first, first + count)]


class Harness(ContractHarness):
    """Lottery calls in blocks on the genesis state (tests/contract_harness.py); every
    block has its own `prev_hash`, since the seed depends on one."""

    def __init__(self, consortium: Consortium) -> None:
        super().__init__(consortium, lottery)

    def prev_hash(self, height: int) -> bytes:
        return sha(f"block {height - 1}")


@pytest.fixture
def harness(consortium: Consortium) -> Harness:
    return Harness(consortium)


def assert_refused(receipt: Receipt, code: str) -> None:
    assert receipt.ok is False, receipt
    assert receipt.error == code, receipt


def create_args(project: str = PROJECT, winners: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "project_id": project,
        "title": "Spring draw",
        "rules": {"prizes": 3, "text": "one entry per customer"},
        "notary_org": NOTARY,
        "winners": winners,
        "sponsor_commit": hashlib.sha256(SPONSOR_SECRET).digest(),
        **extra,
    }


def open_project(harness: Harness, project: str = PROJECT, winners: int = 3) -> None:
    harness.ok("create", create_args(project, winners), SPONSOR)
    notary_commit = hashlib.sha256(NOTARY_SECRET).digest()
    harness.ok("approve", {"project_id": project, "notary_commit": notary_commit}, NOTARY)


def add(harness: Harness, batch: list[bytes], project: str = PROJECT) -> Receipt:
    return harness.call("add_participants", {"project_id": project, "entries": batch}, SPONSOR)


def sealed_project(harness: Harness, count: int = 20, winners: int = 3) -> None:
    open_project(harness, winners=winners)
    assert add(harness, entries(0, count)).ok
    harness.ok("seal", {"project_id": PROJECT}, SPONSOR)


def revealed_project(harness: Harness, count: int = 20, winners: int = 3) -> None:
    sealed_project(harness, count, winners)
    harness.ok("reveal", {"project_id": PROJECT, "secret": SPONSOR_SECRET}, SPONSOR)
    harness.ok("reveal", {"project_id": PROJECT, "secret": NOTARY_SECRET}, NOTARY)


# --- the whole life of a draw ----------------------------------------------------------------


def test_a_draw_from_create_to_notarize_is_recomputable_from_the_record(
    harness: Harness,
) -> None:
    open_project(harness)
    assert harness.query(f"projects/{PROJECT}")["status"] == "open"
    first = add(harness, entries(0, 1500))
    second = add(harness, entries(1500, 700))
    assert first.ok and second.ok
    assert first.result == {"project_id": PROJECT, "first": 0, "count": 1500}
    assert second.result == {"project_id": PROJECT, "first": 1500, "count": 2200}
    sealing_height = harness.height
    sealed = harness.ok("seal", {"project_id": PROJECT}, NOTARY)
    expected_root = merkle.merkle_root(entries(0, 2200))
    assert sealed.result["participants_root"] == expected_root
    harness.ok("reveal", {"project_id": PROJECT, "secret": SPONSOR_SECRET}, SPONSOR)
    harness.ok("reveal", {"project_id": PROJECT, "secret": NOTARY_SECRET}, NOTARY)
    drawn = harness.ok("draw", {"project_id": PROJECT}, NOTARY)

    seed = lottery_draw.draw_seed(
        PROJECT,
        expected_root,
        2200,
        SPONSOR_SECRET,
        NOTARY_SECRET,
        harness.block_hash_at(sealing_height),
    )
    indices = lottery_draw.draw_winners(seed, 2200, 3)
    assert drawn.result == {"project_id": PROJECT, "seed": seed, "winners": indices}
    listed = entries(0, 2200)
    assert harness.query(f"projects/{PROJECT}/winners") == {
        "winners": [{"index": i, "entry": listed[i].hex()} for i in indices]
    }
    digest = sha("certificate.pdf")
    harness.ok("notarize", {"project_id": PROJECT, "statement_digest": digest}, NOTARY)

    project = harness.query(f"projects/{PROJECT}")
    assert project["status"] == "notarized"
    assert project["sponsor_org"] == SPONSOR and project["notary_org"] == NOTARY
    assert project["winners"] == 3 and project["count"] == 2200
    assert project["participants_root"] == expected_root.hex()
    assert project["sealed_height"] == sealing_height
    assert project["seed"] == seed.hex()
    assert project["statement_digest"] == digest.hex()
    assert set(project["heights"]) == {
        "create",
        "approve",
        "seal",
        "sponsor_reveal",
        "notary_reveal",
        "draw",
        "notarize",
    }
    winner = harness.query(f"projects/{PROJECT}/entries/{listed[indices[1]].hex()}")
    assert winner["in_list"] and winner["winner"] and winner["winner_rank"] == 1


# --- refusals ------------------------------------------------------------------------------


def test_create_is_for_enterprises_with_a_real_distinct_notary(harness: Harness) -> None:
    assert_refused(harness.call("create", create_args(), NOTARY), "tx.forbidden")
    assert_refused(
        harness.call("create", create_args(notary_org=OUTSIDER), SPONSOR), "lottery.bad_notary"
    )
    assert_refused(
        harness.call("create", create_args(notary_org="nobody"), SPONSOR), "lottery.bad_notary"
    )
    assert_refused(harness.call("create", create_args(winners=0), SPONSOR), "tx.invalid_args")
    harness.ok("create", create_args(), SPONSOR)
    assert_refused(harness.call("create", create_args(), OUTSIDER), "lottery.exists")


def test_approve_is_the_named_notarys_once(harness: Harness) -> None:
    harness.ok("create", create_args(), SPONSOR)
    commit = {"project_id": PROJECT, "notary_commit": sha("c")}
    assert_refused(harness.call("approve", commit, SPONSOR), "tx.forbidden")
    harness.ok("approve", commit, NOTARY)
    assert_refused(harness.call("approve", commit, NOTARY), "lottery.wrong_state")
    missing = {"project_id": "nope", "notary_commit": sha("c")}
    assert_refused(harness.call("approve", missing, NOTARY), "lottery.not_found")


def test_entries_come_from_the_sponsor_while_open_and_never_twice(harness: Harness) -> None:
    harness.ok("create", create_args(), SPONSOR)
    assert_refused(add(harness, entries(0, 3)), "lottery.not_open")
    harness.ok("approve", {"project_id": PROJECT, "notary_commit": sha("c")}, NOTARY)
    batch = {"project_id": PROJECT, "entries": entries(0, 3)}
    assert_refused(harness.call("add_participants", batch, OUTSIDER), "lottery.not_sponsor")
    assert_refused(harness.call("add_participants", batch, NOTARY), "lottery.not_sponsor")
    assert add(harness, entries(0, 3)).ok
    repeated = add(harness, [*entries(10, 2), entries(1, 1)[0]])
    assert_refused(repeated, "lottery.duplicate_entry")
    assert repeated.result == {
        "project_id": PROJECT,
        "entry": entries(1, 1)[0],
        "position": 2,
        "index": 1,
    }
    assert_refused(add(harness, [entries(5, 1)[0]] * 2), "lottery.duplicate_entry")
    assert harness.query(f"projects/{PROJECT}")["count"] == 3  # refused calls added nothing
    too_many = {"project_id": PROJECT, "entries": entries(100, 10_001)}
    assert_refused(harness.call("add_participants", too_many, SPONSOR), "tx.invalid_args")
    short = {"project_id": PROJECT, "entries": [b"\x01" * 31]}
    assert_refused(harness.call("add_participants", short, SPONSOR), "tx.invalid_args")


def test_seal_needs_a_party_an_open_list_and_enough_entries(harness: Harness) -> None:
    open_project(harness, winners=3)
    assert add(harness, entries(0, 2)).ok
    seal = {"project_id": PROJECT}
    assert_refused(harness.call("seal", seal, OUTSIDER), "lottery.not_party")
    assert_refused(harness.call("seal", seal, SPONSOR), "lottery.too_few")
    assert add(harness, entries(2, 1)).ok
    harness.ok("seal", seal, SPONSOR)
    assert_refused(harness.call("seal", seal, NOTARY), "lottery.not_open")
    assert_refused(add(harness, entries(3, 1)), "lottery.not_open")


def test_reveals_come_after_the_seal_sponsor_first_and_must_match(harness: Harness) -> None:
    open_project(harness)
    assert add(harness, entries(0, 5)).ok
    sponsor = {"project_id": PROJECT, "secret": SPONSOR_SECRET}
    notary = {"project_id": PROJECT, "secret": NOTARY_SECRET}
    assert_refused(harness.call("reveal", sponsor, SPONSOR), "lottery.wrong_state")
    harness.ok("seal", {"project_id": PROJECT}, SPONSOR)
    assert_refused(harness.call("reveal", notary, NOTARY), "lottery.sponsor_first")
    assert_refused(harness.call("reveal", sponsor, OUTSIDER), "lottery.not_party")
    wrong = {"project_id": PROJECT, "secret": NOTARY_SECRET}
    assert_refused(harness.call("reveal", wrong, SPONSOR), "lottery.bad_reveal")
    harness.ok("reveal", sponsor, SPONSOR)
    assert_refused(harness.call("reveal", sponsor, SPONSOR), "lottery.already_revealed")
    assert_refused(harness.call("reveal", sponsor, NOTARY), "lottery.bad_reveal")
    harness.ok("reveal", notary, NOTARY)


def test_no_secret_is_revealed_in_the_sealing_block(harness: Harness) -> None:
    """The sealing block's proposer must not see a secret while its block hash, which goes
    into the seed, can still vary: a reveal in that block is refused, the next block's is
    not."""
    open_project(harness)
    assert add(harness, entries(0, 5)).ok
    sealing_height = harness.height
    seal = harness.tx("seal", {"project_id": PROJECT}, SPONSOR)
    reveal = harness.tx("reveal", {"project_id": PROJECT, "secret": SPONSOR_SECRET}, SPONSOR)
    sealed, refused = harness.commit([seal, reveal]).receipts
    assert sealed.ok
    assert_refused(refused, "lottery.wrong_state")
    assert refused.result == {"project_id": PROJECT, "sealed_height": sealing_height}
    harness.ok("reveal", {"project_id": PROJECT, "secret": SPONSOR_SECRET}, SPONSOR)
    harness.ok("reveal", {"project_id": PROJECT, "secret": NOTARY_SECRET}, NOTARY)
    assert harness.query(f"projects/{PROJECT}")["sealed_block_hash"] is None
    harness.ok("draw", {"project_id": PROJECT}, NOTARY)
    recorded = harness.query(f"projects/{PROJECT}")["sealed_block_hash"]
    assert recorded == harness.block_hash_at(sealing_height).hex()


def test_draw_is_the_notarys_after_both_reveals(harness: Harness) -> None:
    sealed_project(harness)
    draw = {"project_id": PROJECT}
    assert_refused(harness.call("draw", draw, SPONSOR), "tx.forbidden")
    assert_refused(harness.call("draw", draw, NOTARY), "lottery.not_revealed")
    harness.ok("reveal", {"project_id": PROJECT, "secret": SPONSOR_SECRET}, SPONSOR)
    assert_refused(harness.call("draw", draw, NOTARY), "lottery.not_revealed")
    with pytest.raises(lottery.QueryNotFound):
        harness.query(f"projects/{PROJECT}/winners")
    harness.ok("reveal", {"project_id": PROJECT, "secret": NOTARY_SECRET}, NOTARY)
    harness.ok("draw", draw, NOTARY)
    assert_refused(harness.call("draw", draw, NOTARY), "lottery.wrong_state")


def test_notarize_follows_the_draw(harness: Harness) -> None:
    revealed_project(harness)
    statement = {"project_id": PROJECT, "statement_digest": sha("cert")}
    assert_refused(harness.call("notarize", statement, NOTARY), "lottery.wrong_state")
    assert_refused(harness.call("notarize", statement, SPONSOR), "tx.forbidden")
    harness.ok("draw", {"project_id": PROJECT}, NOTARY)
    harness.ok("notarize", statement, NOTARY)
    assert_refused(harness.call("notarize", statement, NOTARY), "lottery.wrong_state")


@pytest.mark.parametrize("stage", ["created", "open", "sealed", "revealed"])
def test_the_notary_cancels_before_the_draw_on_the_record(harness: Harness, stage: str) -> None:
    if stage == "created":
        harness.ok("create", create_args(), SPONSOR)
    elif stage == "open":
        open_project(harness)
    elif stage == "sealed":
        sealed_project(harness)
    else:
        revealed_project(harness)
    cancel = {"project_id": PROJECT, "reason": "the sponsor did not reveal"}
    assert_refused(harness.call("cancel", cancel, SPONSOR), "tx.forbidden")
    harness.ok("cancel", cancel, NOTARY)
    project = harness.query(f"projects/{PROJECT}")
    assert project["status"] == "cancelled"
    assert project["cancel_reason"] == "the sponsor did not reveal"
    assert_refused(harness.call("cancel", cancel, NOTARY), "lottery.wrong_state")
    assert_refused(harness.call("draw", {"project_id": PROJECT}, NOTARY), "lottery.wrong_state")


def test_a_drawn_project_cannot_be_cancelled(harness: Harness) -> None:
    revealed_project(harness)
    harness.ok("draw", {"project_id": PROJECT}, NOTARY)
    cancel = {"project_id": PROJECT, "reason": "too late"}
    assert_refused(harness.call("cancel", cancel, NOTARY), "lottery.wrong_state")


def test_a_notary_of_another_project_cannot_act(consortium: Consortium) -> None:
    harness = Harness(consortium)
    open_project(harness)
    # Only one notary org exists in the test genesis: its role passes, the org check is
    # what protects; an enterprise signer never passes the role gate.
    assert_refused(
        harness.call("cancel", {"project_id": PROJECT, "reason": "x"}, OUTSIDER), "tx.forbidden"
    )


# --- queries -------------------------------------------------------------------------------


def test_queries_refuse_malformed_paths_and_unknown_projects(harness: Harness) -> None:
    with pytest.raises(lottery.QueryNotFound):
        harness.query("projects/none")
    with pytest.raises(lottery.QueryNotFound):
        harness.query("elsewhere")
    open_project(harness)
    with pytest.raises(lottery.ContractError) as refused:
        harness.query(f"projects/{PROJECT}/entries/zz")
    assert refused.value.code == "query.invalid_args"
    absent = harness.query(f"projects/{PROJECT}/entries/{sha('absent').hex()}")
    assert absent["in_list"] is False and absent["proof"] is None


@pytest.mark.parametrize(
    "batches", [[1], [1023], [1024], [1025], [1000, 24, 1, 1023, 1], [3000, 2000, 100]]
)
def test_entry_audit_paths_verify_across_chunk_boundaries(
    harness: Harness, batches: list[int]
) -> None:
    open_project(harness, winners=1)
    total = 0
    for size in batches:
        assert add(harness, entries(total, size)).ok
        total += size
        listed = entries(0, total)
        project = harness.query(f"projects/{PROJECT}")
        root = bytes.fromhex(project["current_root"])
        assert root == merkle.merkle_root(listed)
        for index in sorted({0, total // 2, total - 1, *range(1020, min(total, 1030))}):
            answer = harness.query(f"projects/{PROJECT}/entries/{listed[index].hex()}")
            assert answer["index"] == index and answer["root"] == root.hex()
            proof = merkle.InclusionProof.from_json(answer["proof"])
            assert merkle.verify_inclusion(listed[index], proof, root)
            assert answer["proof"]["path"] == [
                node.hex() for node in merkle.audit_path(listed, index)
            ]
    harness.ok("seal", {"project_id": PROJECT}, SPONSOR)
    sealed = harness.query(f"projects/{PROJECT}")
    assert sealed["participants_root"] == merkle.merkle_root(entries(0, total)).hex()


# --- the RFC 6962 helper against node/merkle.py ----------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13, 64, 65, 100, 257])
def test_rfc6962_helper_agrees_with_node_merkle(size: int) -> None:
    leaves = [sha(f"leaf {n}") for n in range(size)]
    frontier: list[bytes] = []
    for n, leaf in enumerate(leaves):
        rfc6962.frontier_append(frontier, n, rfc6962.leaf_hash(leaf))
    assert rfc6962.frontier_root(frontier) == merkle.merkle_root(leaves)
    assert len(frontier) == bin(size).count("1")
    hashes = [rfc6962.leaf_hash(leaf) for leaf in leaves]
    assert rfc6962.root_of_leaf_hashes(hashes) == merkle.merkle_root(leaves)

    def perfect(level: int, index: int) -> bytes:
        return merkle.merkle_root(leaves[index << level : (index + 1) << level])

    for index in range(size):
        assert rfc6962.audit_path(perfect, index, size) == merkle.audit_path(leaves, index)


# --- the draw: published test vectors (docs/lottery.md) ---------------------------------------

VECTOR_INPUTS = {
    "participants_root": sha("root"),
    "sponsor_secret": sha("sponsor"),
    "notary_secret": sha("notary"),
    "block_hash": sha("block"),
}
VECTORS = [
    (
        "demo-1",
        10,
        3,
        "d6c12c02aaceb822f20520b658f1ad1f2893eb013a27a03a3a3e85b511771bb1",
        [3, 9, 2],
    ),
    (
        "draw:2026.11",
        1000,
        10,
        "3b98cb716bb2c5617aad5beb918b82505824ea7d453b4ac6eeeb11e32abc8a40",
        [700, 811, 770, 834, 869, 546, 517, 327, 676, 859],
    ),
    (
        "big",
        100_000_000,
        5,
        "bc1ebb78e2670823fe2829c4233c85ac230209f946b578f5b6bcbf771aa9cadc",
        [88369377, 52055466, 21550017, 72161905, 86490651],
    ),
    (
        "all",
        5,
        5,
        "fb605834c05583bf20aaf17abdf276df94627d6efe4868ada4bfbf673f1a4e16",
        [0, 4, 1, 3, 2],
    ),
]


@pytest.mark.parametrize(("project_id", "count", "winners", "seed_hex", "expected"), VECTORS)
def test_draw_matches_the_published_vectors(
    project_id: str, count: int, winners: int, seed_hex: str, expected: list[int]
) -> None:
    seed = lottery_draw.draw_seed(
        project_id,
        VECTOR_INPUTS["participants_root"],
        count,
        VECTOR_INPUTS["sponsor_secret"],
        VECTOR_INPUTS["notary_secret"],
        VECTOR_INPUTS["block_hash"],
    )
    assert seed.hex() == seed_hex
    assert lottery_draw.draw_winners(seed, count, winners) == expected


def test_draw_rejects_candidates_above_the_largest_multiple_of_count() -> None:
    # count = 2**255 + 1: the limit is count itself, so about half the candidates fall
    # above it. Candidates 0, 3 and 4 of this seed do, and are skipped.
    seed = sha("rejection")
    count = 2**255 + 1
    assert lottery_draw.rejection_limit(count) == count
    accepted = [
        lottery_draw.candidate(seed, i) % count
        for i in (1, 2, 5)
        if lottery_draw.candidate(seed, i) < count
    ]
    assert [lottery_draw.candidate(seed, i) >= count for i in range(6)] == [
        True,
        False,
        False,
        True,
        True,
        False,
    ]
    assert lottery_draw.draw_winners(seed, count, 3) == accepted


def test_draw_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError):
        lottery_draw.draw_winners(sha("s"), 3, 4)
    with pytest.raises(ValueError):
        lottery_draw.draw_seed("p", b"short", 1, sha("a"), sha("b"), sha("c"))


# --- statistics ----------------------------------------------------------------------------


def regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a) (Numerical Recipes: series below a + 1, Lentz's
    continued fraction above)."""
    if x <= 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        while abs(term) > abs(total) * 1e-15:
            n += 1
            term *= x / n
            total += term
        return 1.0 - total * math.exp(log_prefactor)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(log_prefactor) * h


def test_regularized_gamma_matches_known_values() -> None:
    # chi-square survival: 1 dof at 3.841 is 0.05; 9 dof at 16.919 is 0.05.
    assert regularized_upper_gamma(0.5, 3.841458820694124 / 2) == pytest.approx(0.05, rel=1e-9)
    assert regularized_upper_gamma(4.5, 16.918977604620448 / 2) == pytest.approx(0.05, rel=1e-9)
    assert regularized_upper_gamma(1.0, 2.0) == pytest.approx(math.exp(-2.0), rel=1e-12)


def draw_many(count: int, winners: int, draws: int) -> list[list[int]]:
    return [
        lottery_draw.draw_winners(sha(f"statistics seed {n}"), count, winners) for n in range(draws)
    ]


def test_winner_indices_are_uniform_by_chi_square() -> None:
    count, draws = 37, 20_000  # 37 is no power of two: rejection sampling is exercised
    observed = [0] * count
    for (index,) in draw_many(count, 1, draws):
        observed[index] += 1
    expected = draws / count
    chi_square = sum((o - expected) ** 2 / expected for o in observed)
    p_value = regularized_upper_gamma((count - 1) / 2, chi_square / 2)
    assert p_value > 0.001, (chi_square, p_value)


def test_every_winner_position_is_uniform_by_chi_square() -> None:
    count, winners, draws = 10, 4, 10_000
    for position in range(winners):
        observed = [0] * count
        for drawn in draw_many(count, winners, draws):
            observed[drawn[position]] += 1
        expected = draws / count
        chi_square = sum((o - expected) ** 2 / expected for o in observed)
        assert regularized_upper_gamma((count - 1) / 2, chi_square / 2) > 0.001


def draw_bits() -> list[int]:
    """16 bits per winner index, over draws with count = 2**16 and many seeds."""
    bits: list[int] = []
    for drawn in draw_many(2**16, 2, 4_000):
        for index in drawn:
            bits.extend(index >> shift & 1 for shift in range(15, -1, -1))
    return bits


def nist_frequency(bits: list[int]) -> float:
    """SP 800-22 2.1: the monobit test."""
    s = sum(2 * bit - 1 for bit in bits)
    return math.erfc(abs(s) / math.sqrt(len(bits)) / math.sqrt(2))


def nist_block_frequency(bits: list[int], block_bits: int) -> float:
    """SP 800-22 2.2: frequency within blocks of `block_bits`."""
    blocks = len(bits) // block_bits
    chi_square = (
        4
        * block_bits
        * sum(
            (sum(bits[i * block_bits : (i + 1) * block_bits]) / block_bits - 0.5) ** 2
            for i in range(blocks)
        )
    )
    return regularized_upper_gamma(blocks / 2, chi_square / 2)


def nist_runs(bits: list[int]) -> float:
    """SP 800-22 2.3: the runs test (after its frequency prerequisite)."""
    n = len(bits)
    pi = sum(bits) / n
    assert abs(pi - 0.5) < 2 / math.sqrt(n), "frequency prerequisite of the runs test"
    runs = 1 + sum(bits[k] != bits[k + 1] for k in range(n - 1))
    return math.erfc(abs(runs - 2 * n * pi * (1 - pi)) / (2 * math.sqrt(2 * n) * pi * (1 - pi)))


def test_draw_output_bits_pass_nist_frequency_block_frequency_and_runs() -> None:
    bits = draw_bits()
    assert len(bits) == 128_000
    assert nist_frequency(bits) >= 0.01
    assert nist_block_frequency(bits, 128) >= 0.01
    assert nist_runs(bits) >= 0.01


def test_nist_tests_reject_a_biased_stream() -> None:
    biased = [1 if n % 10 < 6 else 0 for n in range(128_000)]
    assert nist_frequency(biased) < 0.01
    assert nist_block_frequency([n % 256 < 160 for n in range(128_000)], 128) < 0.01
    alternating = [n % 2 for n in range(128_000)]
    assert nist_runs(alternating) < 0.01


@pytest.mark.parametrize(("project_id", "count", "winners", "seed_hex", "expected"), VECTORS)
def test_the_standalone_verifier_draws_like_the_contract(
    project_id: str, count: int, winners: int, seed_hex: str, expected: list[int]
) -> None:
    section = {
        "project_id": project_id,
        "count": count,
        "participants_root": VECTOR_INPUTS["participants_root"],
        "sponsor_secret": VECTOR_INPUTS["sponsor_secret"],
        "notary_secret": VECTOR_INPUTS["notary_secret"],
        "sealed_block_hash": VECTOR_INPUTS["block_hash"],
    }
    assert verifier.lottery_seed(section).hex() == seed_hex
    assert verifier.lottery_winners(bytes.fromhex(seed_hex), count, winners) == expected


def test_a_list_stops_at_its_limit(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    open_project(harness, winners=1)
    monkeypatch.setattr(lottery, "ENTRIES_PER_PROJECT_MAX", 5)
    assert add(harness, entries(0, 4)).ok
    assert_refused(add(harness, entries(4, 2)), "lottery.full")
    assert add(harness, entries(4, 1)).ok


def test_no_lottery_module_imports_random() -> None:
    for module in (lottery, lottery_draw, rfc6962, verifier, lottery_cli):
        source = Path(module.__file__ or "").read_text()
        assert "import random" not in source and "from random" not in source, module
