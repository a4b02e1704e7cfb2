"""The invoice document: a Chinese VAT e-invoice (增值税电子发票) as JSON, validated exactly.

The document never reaches a node: the client seals it (node/sealing.py) and the chain
keeps its `digest`, the SHA-256 of its canonical bytes. Every amount is an integer number
of cents (fen, 分) and every total must be exact; there are no floats anywhere (a JSON
number with a fraction or exponent is refused).

    {
      "invoice_code": "044031900111",          发票代码: 10 or 12 digits
      "invoice_number": "12345678",            发票号码: 8 or 20 digits
      "issue_date": "2026-03-14",              开票日期: a calendar date, YYYY-MM-DD
      "seller": {"name": "...", "tax_id": "91440300MA5FXXXXX1"},   销售方 名称, 纳税人识别号
      "buyer":  {"name": "...", "tax_id": "..."},                   购买方
      "items": [                               货物或应税劳务、服务 (1..200 lines)
        {"name": "*信息技术服务*软件维护",     名称
         "specification": "V2",               规格型号 (optional)
         "unit": "次",                         单位 (optional)
         "quantity_milli": 2000,               数量, in thousandths of a unit (2.000)
         "unit_price_cents": 10000,            单价 (without tax)
         "amount_cents": 20000,                金额 = quantity x unit price, rounded half up
         "tax_rate_bp": 600,                   税率, in basis points (6% = 600)
         "tax_cents": 1200}                    税额 = amount x rate, rounded half up
      ],
      "total_amount_cents": 20000,             合计金额 = sum of amounts
      "total_tax_cents": 1200,                 合计税额 = sum of taxes
      "total_with_tax_cents": 21200,           价税合计 = amount + tax
      "check_code": "12345678901234567890",    校验码: 20 digits
      "remarks": "..."                         备注 (optional)
    }

Rounding is half up on exact integers: `amount_cents = (quantity_milli * unit_price_cents +
500) // 1000` and `tax_cents = (amount_cents * tax_rate_bp + 5000) // 10000`, per line, as
the invoice shows them. Canonical bytes: UTF-8 JSON with keys sorted, no whitespace and
non-ASCII characters as they are, of the validated document (optional fields only when
present). A red-letter reversal is the contract's `void`, not a negative document, so
amounts are never negative.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

INVOICE_CODE_PATTERN: Final = re.compile(r"[0-9]{10}|[0-9]{12}")
INVOICE_NUMBER_PATTERN: Final = re.compile(r"[0-9]{8}|[0-9]{20}")
CHECK_CODE_PATTERN: Final = re.compile(r"[0-9]{20}")
# 纳税人识别号: the 18-character unified social credit code, or the older 15/17/20 forms.
TAX_ID_PATTERN: Final = re.compile(r"[0-9A-Z]{15}|[0-9A-Z]{17,18}|[0-9A-Z]{20}")
DATE_PATTERN: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
PARTY_NAME_CHARS_MAX: Final = 200
ITEM_NAME_CHARS_MAX: Final = 200
ITEM_TEXT_CHARS_MAX: Final = 64  # specification, unit
REMARKS_CHARS_MAX: Final = 1000
LINE_ITEMS_MAX: Final = 200
QUANTITY_MILLI_MAX: Final = 10**15
UNIT_PRICE_CENTS_MAX: Final = 10**13
AMOUNT_CENTS_MAX: Final = 10**13  # 100 billion yuan on one line
TAX_RATE_BP_MAX: Final = 10_000
QUANTITY_SCALE: Final = 1000
TAX_RATE_SCALE: Final = 10_000
# A document must fit, sealed for every recipient, in the contract's SEALED_BYTES_MAX.
DOCUMENT_BYTES_MAX: Final = 48 * 1024

DOCUMENT_FIELDS: Final = frozenset(
    {
        "invoice_code",
        "invoice_number",
        "issue_date",
        "seller",
        "buyer",
        "items",
        "total_amount_cents",
        "total_tax_cents",
        "total_with_tax_cents",
        "check_code",
    }
)
DOCUMENT_OPTIONAL_FIELDS: Final = frozenset({"remarks"})
PARTY_FIELDS: Final = frozenset({"name", "tax_id"})
ITEM_FIELDS: Final = frozenset(
    {"name", "quantity_milli", "unit_price_cents", "amount_cents", "tax_rate_bp", "tax_cents"}
)
ITEM_OPTIONAL_FIELDS: Final = frozenset({"specification", "unit"})


class InvoiceDocumentError(ValueError):
    """A document that is not a valid invoice; `field` names where (e.g. `items[2].tax_cents`)."""

    code = "invoice_document.invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def round_half_up(numerator: int, denominator: int) -> int:
    """`numerator / denominator` rounded half up, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    tax_id: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tax_id": self.tax_id}


@dataclass(frozen=True, slots=True)
class LineItem:
    name: str
    quantity_milli: int
    unit_price_cents: int
    amount_cents: int
    tax_rate_bp: int
    tax_cents: int
    specification: str | None = None
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "name": self.name,
            "quantity_milli": self.quantity_milli,
            "unit_price_cents": self.unit_price_cents,
            "amount_cents": self.amount_cents,
            "tax_rate_bp": self.tax_rate_bp,
            "tax_cents": self.tax_cents,
        }
        if self.specification is not None:
            answer["specification"] = self.specification
        if self.unit is not None:
            answer["unit"] = self.unit
        return answer


@dataclass(frozen=True, slots=True)
class InvoiceDocument:
    """A validated invoice document; build it with `parse_document` or `load_document`."""

    invoice_code: str
    invoice_number: str
    issue_date: str
    seller: Party
    buyer: Party
    items: tuple[LineItem, ...]
    total_amount_cents: int
    total_tax_cents: int
    total_with_tax_cents: int
    check_code: str
    remarks: str | None = None

    @property
    def invoice_no(self) -> str:
        """The contract's `invoice_no`: `<invoice code>-<invoice number>`."""
        return f"{self.invoice_code}-{self.invoice_number}"

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "invoice_code": self.invoice_code,
            "invoice_number": self.invoice_number,
            "issue_date": self.issue_date,
            "seller": self.seller.to_json(),
            "buyer": self.buyer.to_json(),
            "items": [item.to_json() for item in self.items],
            "total_amount_cents": self.total_amount_cents,
            "total_tax_cents": self.total_tax_cents,
            "total_with_tax_cents": self.total_with_tax_cents,
            "check_code": self.check_code,
        }
        if self.remarks is not None:
            answer["remarks"] = self.remarks
        return answer

    def canonical_bytes(self) -> bytes:
        """UTF-8 JSON, keys sorted, no whitespace: what `digest` hashes."""
        return canonical_json(self.to_json())

    def digest(self) -> bytes:
        """SHA-256 of `canonical_bytes()`: the contract's `digest`."""
        return hashlib.sha256(self.canonical_bytes()).digest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- validation ----------------------------------------------------------------------------


def _fields(raw: Any, where: str, required: frozenset[str], optional: frozenset[str]) -> None:
    """Raises: InvoiceDocumentError for a non-object, a missing or an unknown field."""
    if not isinstance(raw, dict):
        raise InvoiceDocumentError(where, "must be an object")
    missing = sorted(required - raw.keys())
    if missing:
        raise InvoiceDocumentError(_join(where, missing[0]), "is required")
    unknown = sorted(raw.keys() - required - optional)
    if unknown:
        raise InvoiceDocumentError(_join(where, unknown[0]), "is not a field of an invoice")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _pattern(raw: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = raw[name]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvoiceDocumentError(name, f"must be {what}")
    return value


def _text(raw: dict[str, Any], name: str, where: str, chars_max: int) -> str:
    value = raw[name]
    if not isinstance(value, str) or not 0 < len(value.strip()) <= chars_max:
        raise InvoiceDocumentError(_join(where, name), f"must be text of 1..{chars_max} characters")
    return value


def _integer(raw: dict[str, Any], name: str, where: str, maximum: int) -> int:
    value = raw[name]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvoiceDocumentError(_join(where, name), f"must be an integer in 0..{maximum}")
    return value


def _date(raw: dict[str, Any]) -> str:
    value = _pattern(raw, "issue_date", DATE_PATTERN, "a date YYYY-MM-DD")
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        raise InvoiceDocumentError("issue_date", f"{value} is not a calendar date") from None
    return value


def _party(raw: dict[str, Any], name: str) -> Party:
    party = raw[name]
    _fields(party, name, PARTY_FIELDS, frozenset())
    tax_id = party["tax_id"]
    if not isinstance(tax_id, str) or not TAX_ID_PATTERN.fullmatch(tax_id):
        raise InvoiceDocumentError(
            f"{name}.tax_id", "must be 15, 17, 18 or 20 characters of [0-9A-Z]"
        )
    return Party(_text(party, "name", name, PARTY_NAME_CHARS_MAX), tax_id)


def _item(raw: Any, index: int) -> LineItem:
    where = f"items[{index}]"
    _fields(raw, where, ITEM_FIELDS, ITEM_OPTIONAL_FIELDS)
    item = LineItem(
        name=_text(raw, "name", where, ITEM_NAME_CHARS_MAX),
        quantity_milli=_integer(raw, "quantity_milli", where, QUANTITY_MILLI_MAX),
        unit_price_cents=_integer(raw, "unit_price_cents", where, UNIT_PRICE_CENTS_MAX),
        amount_cents=_integer(raw, "amount_cents", where, AMOUNT_CENTS_MAX),
        tax_rate_bp=_integer(raw, "tax_rate_bp", where, TAX_RATE_BP_MAX),
        tax_cents=_integer(raw, "tax_cents", where, AMOUNT_CENTS_MAX),
        specification=(
            _text(raw, "specification", where, ITEM_TEXT_CHARS_MAX)
            if "specification" in raw
            else None
        ),
        unit=_text(raw, "unit", where, ITEM_TEXT_CHARS_MAX) if "unit" in raw else None,
    )
    _check_line(item, where)
    return item


def _check_line(item: LineItem, where: str) -> None:
    """Raises: InvoiceDocumentError unless amount and tax are exactly what they should be."""
    amount = round_half_up(item.quantity_milli * item.unit_price_cents, QUANTITY_SCALE)
    if item.amount_cents != amount:
        raise InvoiceDocumentError(
            f"{where}.amount_cents",
            f"is {item.amount_cents}, but quantity x unit price is {amount} cents",
        )
    tax = round_half_up(item.amount_cents * item.tax_rate_bp, TAX_RATE_SCALE)
    if item.tax_cents != tax:
        raise InvoiceDocumentError(
            f"{where}.tax_cents", f"is {item.tax_cents}, but amount x tax rate is {tax} cents"
        )


def _check_totals(document: InvoiceDocument) -> None:
    """Raises: InvoiceDocumentError naming the first total that is not exact."""
    amount = sum(item.amount_cents for item in document.items)
    tax = sum(item.tax_cents for item in document.items)
    expected = (
        ("total_amount_cents", document.total_amount_cents, amount, "the sum of the amounts"),
        ("total_tax_cents", document.total_tax_cents, tax, "the sum of the taxes"),
        ("total_with_tax_cents", document.total_with_tax_cents, amount + tax, "amount + tax"),
    )
    for name, found, wanted, what in expected:
        if found != wanted:
            raise InvoiceDocumentError(name, f"is {found}, but {what} is {wanted}")


def parse_document(raw: Any) -> InvoiceDocument:
    """Validate a decoded JSON document.

    Raises:
        InvoiceDocumentError: naming the first field that is missing, unknown, malformed,
            or not exactly computed.
    """
    _fields(raw, "", DOCUMENT_FIELDS, DOCUMENT_OPTIONAL_FIELDS)
    items = raw["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= LINE_ITEMS_MAX:
        raise InvoiceDocumentError("items", f"must be a list of 1..{LINE_ITEMS_MAX} lines")
    document = InvoiceDocument(
        invoice_code=_pattern(raw, "invoice_code", INVOICE_CODE_PATTERN, "10 or 12 digits"),
        invoice_number=_pattern(raw, "invoice_number", INVOICE_NUMBER_PATTERN, "8 or 20 digits"),
        issue_date=_date(raw),
        seller=_party(raw, "seller"),
        buyer=_party(raw, "buyer"),
        items=tuple(_item(item, index) for index, item in enumerate(items)),
        total_amount_cents=_integer(
            raw, "total_amount_cents", "", LINE_ITEMS_MAX * AMOUNT_CENTS_MAX
        ),
        total_tax_cents=_integer(raw, "total_tax_cents", "", LINE_ITEMS_MAX * AMOUNT_CENTS_MAX),
        total_with_tax_cents=_integer(
            raw, "total_with_tax_cents", "", 2 * LINE_ITEMS_MAX * AMOUNT_CENTS_MAX
        ),
        check_code=_pattern(raw, "check_code", CHECK_CODE_PATTERN, "20 digits"),
        remarks=_text(raw, "remarks", "", REMARKS_CHARS_MAX) if "remarks" in raw else None,
    )
    _check_totals(document)
    if len(document.canonical_bytes()) > DOCUMENT_BYTES_MAX:
        raise InvoiceDocumentError("", f"the document is over {DOCUMENT_BYTES_MAX} bytes")
    return document


def _refuse_float(text: str) -> Any:
    raise InvoiceDocumentError("", f"the number {text} is not an integer; amounts are in cents")


def _refuse_constant(text: str) -> Any:
    raise InvoiceDocumentError("", f"{text} is not a number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvoiceDocumentError("", "an object repeats a key")
    return result


def load_document(data: bytes | str) -> InvoiceDocument:
    """Parse and validate a JSON invoice document (UTF-8).

    Raises:
        InvoiceDocumentError: not JSON, a non-integer number, or an invalid document.
    """
    if isinstance(data, bytes):
        if len(data) > 4 * DOCUMENT_BYTES_MAX:
            raise InvoiceDocumentError("", "the file is too large for an invoice")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvoiceDocumentError("", "the document is not UTF-8") from None
    try:
        raw = json.loads(
            data,
            parse_float=_refuse_float,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except ValueError as exc:
        if isinstance(exc, InvoiceDocumentError):
            raise
        raise InvoiceDocumentError("", f"not JSON: {exc}") from None
    return parse_document(raw)


def document_from_bytes(data: bytes) -> InvoiceDocument:
    """Parse canonical bytes back (what `unseal` returns) and check they are canonical.

    Raises:
        InvoiceDocumentError: invalid, or valid but not in canonical form.
    """
    document = load_document(data)
    if document.canonical_bytes() != data:
        raise InvoiceDocumentError("", "the document is not in canonical form")
    return document
