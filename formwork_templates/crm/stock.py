"""The CRM's stock control (库存): a write guard that keeps stock a consequence of movements, never a typed number.

- A **stock movement** (``stock_movements``: in, out or adjust, a product, a warehouse, a quantity) posts to
  the stock level of its product in its warehouse (``stock_levels``, created on first use) with one
  conditional ``UPDATE … SET on_hand = on_hand + delta WHERE on_hand + delta >= 0``: the row lock that
  UPDATE takes serialises concurrent postings on PostgreSQL (the second waits, then re-checks the condition
  against the committed stock), SQLite serialises writers anyway, so stock never goes below zero and no
  posting is lost. The movement keeps the level it posted to and the balance after it: the history.
  Movements can't be changed afterwards (a correction is an adjustment).
- **Confirming an order** (its status entering confirmed, shipped or paid) posts one ``out`` movement per
  product of its lines from the order's warehouse, in the same transaction as the status change; when any
  product is short the change is **refused** (422 on ``status`` naming each short product, in the reader's
  language) and nothing moves. Leaving those states (cancelled, back to draft) puts back what the order took.
  Lines of a confirmed order can't change.
- ``on_hand`` is written by postings only; a line's (order or quote) unit price defaults to the product's.

The guard applies to apps whose ``settings.stock_control`` is true (the CRM template sets it); it is
registered at start-up through the template hooks (``formwork.metadata.portable.register_template_hooks``).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select, text, update

from formwork import db
from formwork.errors import ValidationFailed
from formwork.metadata.catalog import AppDef, TableDef, label_text
from formwork.runtime import guards
from formwork.runtime.guards import PlannedWrite
from formwork.runtime.permissions import Access
from formwork.runtime.records import RecordService

TAKEN = frozenset({"confirmed", "shipped", "paid"})
FROZEN_MOVEMENT_FIELDS = ("type", "product", "warehouse", "quantity", "stock", "balance_after", "order")

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "short": "Not enough stock in {warehouse}: {items}",
        "short_item": "{product} (needs {need}, {have} in stock)",
        "no_warehouse": "Choose the warehouse this order ships from before confirming it",
        "warehouse_locked": "The order has taken its stock from this warehouse; cancel it to change the warehouse",
        "lines_locked": "The order is {status}: its lines can't change (set it back to draft first)",
        "on_hand": "Stock changes through stock movements only",
        "frozen": "Stock movements can't be changed; record an adjustment instead",
        "kept": "Stock movements are the stock's history and can't be deleted; record an adjustment instead",
        "lines_kept": "The order is {status}: its lines can't be deleted (cancel the order first)",
        "order_kept": "The order is {status} and has taken its stock: cancel it instead of deleting it",
        "positive": "Must be more than zero",
        "non_zero": "An adjustment can't be zero",
        "below_zero": "Only {have} of {product} in {warehouse}: this movement would leave {after}",
        "duplicate_level": "{product} already has a stock level in {warehouse}",
        "taken_note": "Order {number} confirmed",
        "return_note": "Order {number} {status}: stock returned",
    },
    "zh-CN": {
        "short": "{warehouse}库存不足：{items}",
        "short_item": "{product}（需要 {need}，库存 {have}）",
        "no_warehouse": "确认订单前请选择发货仓库",
        "warehouse_locked": "订单已从该仓库扣减库存；如需更换仓库请先取消订单",
        "lines_locked": "订单状态为“{status}”，明细不能修改（请先退回草稿）",
        "on_hand": "库存数量只能通过出入库记录变更",
        "frozen": "出入库记录不能修改；如需更正请做盘点调整",
        "kept": "出入库记录是库存的历史，不能删除；如需更正请做盘点调整",
        "lines_kept": "订单状态为“{status}”，明细不能删除（请先取消订单）",
        "order_kept": "订单状态为“{status}”，已扣减库存：请取消订单，不要删除",
        "positive": "必须大于零",
        "non_zero": "盘点调整数量不能为零",
        "below_zero": "{warehouse}的{product}库存只有 {have}，此操作后将为 {after}",
        "duplicate_level": "{product}在{warehouse}已有库存记录",
        "taken_note": "订单 {number} 确认出库",
        "return_note": "订单 {number} {status}，库存退回",
    },
}


def _t(access: Access, key: str, **kw: Any) -> str:
    table = MESSAGES["zh-CN"] if (access.locale or "").lower().startswith("zh") else MESSAGES["en"]
    return table[key].format(**kw)


def _num(v: Any) -> Decimal:
    return Decimal(str(v)) if v is not None else Decimal(0)


def _fmt(v: Decimal) -> str:
    v = v.normalize()
    return f"{v:f}"


def _app(svc: RecordService, t: TableDef) -> AppDef | None:
    app = svc.cat.app_by_id(t.app_id)
    return app if (app.doc.get("settings") or {}).get("stock_control") else None


def _col(t: TableDef, key: str) -> Any:
    return t.sa.c[t.field(key).column_name]


def _name(svc: RecordService, t: TableDef, rid: Any) -> str:
    if rid is None:
        return "-"
    f = t.fields_by_key.get(str(t.doc.get("display_field") or "name"))
    if f is None or not f.stored:
        return str(rid)
    value = svc.conn.execute(select(t.sa.c[f.column_name]).where(t.sa.c.id == rid)).scalar()
    return str(value) if value not in (None, "") else str(rid)


def _system(svc: RecordService) -> RecordService:
    """The guard's own writer: movements are made for whoever confirms an order, even without the right to."""
    access = dataclasses.replace(Access.system(), locale=svc.access.locale, timezone=svc.access.timezone)
    return RecordService(svc.cat, svc.conn, access, origin=svc.origin, depth=svc.depth + 1)


#: the fields the guard works with, per table: an app whose tables were reshaped (a key renamed, a table
#: removed) is left alone rather than half-guarded
SHAPE: dict[str, tuple[str, ...]] = {
    "products": ("name", "price"), "warehouses": ("name",), "stock_levels": ("product", "warehouse", "on_hand"),
    "stock_movements": ("type", "product", "warehouse", "quantity", "stock", "balance_after", "order", "note"),
    "orders": ("number", "status", "warehouse"), "order_lines": ("order", "product", "quantity", "unit_price"),
}


def _shaped(app: AppDef) -> bool:
    for key, fields in SHAPE.items():
        t = app.tables_by_key.get(key)
        if t is None or any(k not in t.fields_by_key for k in fields):
            return False
    return True


def stock_guard(svc: RecordService, t: TableDef, op: str, writes: list[PlannedWrite]) -> None:
    app = _app(svc, t)
    if app is None or t.key not in (*SHAPE, "quote_lines") or not svc.cat.cached(("crm_stock", app.id),
                                                                                 lambda: _shaped(app)):
        return
    if op == "delete":
        _deletes(svc, app, t, writes)
    elif t.key == "stock_movements":
        _movements(svc, app, t, op, writes)
    elif t.key == "stock_levels":
        _levels(svc, app, t, op, writes)
    elif t.key == "orders" and op == "update":
        _orders(svc, app, t, writes)
    elif t.key in ("order_lines", "quote_lines"):
        _lines(svc, app, t, op, writes)


def _deletes(svc: RecordService, app: AppDef, t: TableDef, writes: list[PlannedWrite]) -> None:
    """Movements are history (a correction is an adjustment); a confirmed order and its lines stay while
    the order holds its stock."""
    if t.key == "stock_movements":
        for w in writes:
            w.refuse("", _t(svc.access, "kept"))
        return
    if t.key not in ("orders", "order_lines"):
        return
    orders = app.table("orders")
    status_col = _col(orders, "status")
    ids = [w.record_id for w in writes]
    if t.key == "orders":
        q = select(orders.sa.c.id, status_col).where(orders.sa.c.id.in_(ids), status_col.in_(sorted(TAKEN)))
    else:
        q = select(t.sa.c.id, status_col).join(orders.sa, orders.sa.c.id == _col(t, "order")).where(
            t.sa.c.id.in_(ids), status_col.in_(sorted(TAKEN)))
    taken: dict[int, Any] = {r[0]: r[1] for r in svc.conn.execute(q)}
    for w in writes:
        if w.record_id in taken:
            w.refuse("", _t(svc.access, "order_kept" if t.key == "orders" else "lines_kept",
                            status=_choice(orders, "status", taken[w.record_id], svc.access.locale)))


# --- stock levels and movements ----------------------------------------------------------------------
def _levels(svc: RecordService, app: AppDef, t: TableDef, op: str, writes: list[PlannedWrite]) -> None:
    for w in writes:
        if "on_hand" in w.values and (op == "update" or w.values["on_hand"]):
            w.refuse("on_hand", _t(svc.access, "on_hand"))
        elif op == "create":
            w.values["on_hand"] = 0
        if op == "create" or "product" in w.values or "warehouse" in w.values:
            _check_duplicate_level(svc, app, t, w)


def _check_duplicate_level(svc: RecordService, app: AppDef, t: TableDef, w: PlannedWrite) -> None:
    product, warehouse = w.values.get("product"), w.values.get("warehouse")
    if w.record_id is not None:
        row = svc.conn.execute(select(_col(t, "product"), _col(t, "warehouse")).where(t.sa.c.id == w.record_id)).first()
        if row is not None:
            product = product if "product" in w.values else row[0]
            warehouse = warehouse if "warehouse" in w.values else row[1]
    if product is None or warehouse is None:
        return
    other = _level_id(svc, t, product, warehouse)
    if other is not None and other != w.record_id:
        w.refuse("product", _t(svc.access, "duplicate_level", product=_name(svc, app.table("products"), product),
                               warehouse=_name(svc, app.table("warehouses"), warehouse)))


def _level_id(svc: RecordService, t: TableDef, product: int, warehouse: int) -> int | None:
    return svc.conn.execute(select(t.sa.c.id).where(
        _col(t, "product") == product, _col(t, "warehouse") == warehouse, t.sa.c.deleted_at.is_(None))
        .order_by(t.sa.c.id).limit(1)).scalar()


def _movements(svc: RecordService, app: AppDef, t: TableDef, op: str, writes: list[PlannedWrite]) -> None:
    if op == "update":
        for w in writes:
            for key in FROZEN_MOVEMENT_FIELDS:
                if key in w.values:
                    w.refuse(key, _t(svc.access, "frozen"))
        return
    levels = app.table("stock_levels")
    for w in writes:
        kind, qty = w.values.get("type"), w.values.get("quantity")
        product, warehouse = w.values.get("product"), w.values.get("warehouse")
        for key, value in (("type", kind), ("product", product), ("warehouse", warehouse), ("quantity", qty)):
            if value is None:
                w.refuse(key, svc_required(svc))
        if w.errors:
            continue
        q = _num(qty)
        if kind in ("in", "out") and q <= 0:
            w.refuse("quantity", _t(svc.access, "positive"))
            continue
        if kind == "adjust" and q == 0:
            w.refuse("quantity", _t(svc.access, "non_zero"))
            continue
        delta = -q if kind == "out" else q
        level = _ensure_level(svc, levels, int(product or 0), int(warehouse or 0))
        after = _post(svc, levels, level, delta)
        if after is None:
            have = _num(svc.conn.execute(select(_col(levels, "on_hand")).where(levels.sa.c.id == level)).scalar())
            w.refuse("quantity", _t(svc.access, "below_zero", have=_fmt(have), after=_fmt(have + delta),
                                    product=_name(svc, app.table("products"), product),
                                    warehouse=_name(svc, app.table("warehouses"), warehouse)))
            continue
        w.values["stock"] = level
        w.values["balance_after"] = int(after) if after == after.to_integral_value() else float(after)


def svc_required(svc: RecordService) -> str:
    return "必填" if (svc.access.locale or "").lower().startswith("zh") else "Required"


def _ensure_level(svc: RecordService, levels: TableDef, product: int, warehouse: int) -> int:
    """The stock level of a product in a warehouse, created (empty) on first use; on PostgreSQL an
    advisory lock per pair keeps two first postings from making two levels."""
    if svc.conn.dialect.name == "postgresql":
        svc.conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"),
                         {"a": int(product) % 2_000_000_000, "b": int(warehouse) % 2_000_000_000})
    found = _level_id(svc, levels, product, warehouse)
    if found is not None:
        return found
    rec = _system(svc).create(levels, {"product": product, "warehouse": warehouse})
    return int(rec["id"])


def _post(svc: RecordService, levels: TableDef, level: int, delta: Decimal) -> Decimal | None:
    """Add ``delta`` to the level's stock unless that takes it below zero (one atomic statement); the new
    stock, or None when refused."""
    on_hand = _col(levels, "on_hand")
    current = func.coalesce(on_hand, 0)
    res = svc.conn.execute(update(levels.sa).where(levels.sa.c.id == level, current + delta >= 0).values(
        {on_hand: current + delta, levels.sa.c.version: levels.sa.c.version + 1, levels.sa.c.updated_at: db.utcnow()}))
    if res.rowcount != 1:
        return None
    return _num(svc.conn.execute(select(on_hand).where(levels.sa.c.id == level)).scalar())


# --- orders ------------------------------------------------------------------------------------------
def _orders(svc: RecordService, app: AppDef, t: TableDef, writes: list[PlannedWrite]) -> None:
    if "warehouse" not in t.fields_by_key:
        return
    status_col, wh_col, number_col = _col(t, "status"), _col(t, "warehouse"), _col(t, "number")
    for w in writes:
        if "status" not in w.values and "warehouse" not in w.values:
            continue
        row = svc.conn.execute(select(status_col, wh_col, number_col).where(t.sa.c.id == w.record_id)).first()
        if row is None:
            continue
        old, new = row[0], w.values.get("status", row[0])
        warehouse = w.values.get("warehouse", row[1])
        was, now = old in TAKEN, new in TAKEN
        number = _order_number(t, row[2])
        if was and now:
            if "warehouse" in w.values and warehouse != row[1]:
                w.refuse("warehouse", _t(svc.access, "warehouse_locked"))
        elif now:
            if warehouse is None:
                w.refuse("warehouse", _t(svc.access, "no_warehouse"))
                continue
            _take(svc, app, w, int(w.record_id or 0), int(warehouse), number)
        elif was:
            label = _choice(t, "status", new, svc.access.locale)
            _give_back(svc, app, int(w.record_id or 0), number, label)


def _order_number(t: TableDef, n: Any) -> str:
    opts = t.field("number").options
    return f"{opts.get('prefix') or ''}{str(n or '').zfill(int(opts.get('digits') or 0))}"


def _choice(t: TableDef, key: str, value: Any, locale: str) -> str:
    for c in t.field(key).options.get("choices") or []:
        if c.get("value") == value:
            return label_text(c.get("label"), locale)
    return str(value)


def _take(svc: RecordService, app: AppDef, w: PlannedWrite, order: int, warehouse: int, number: str) -> None:
    lines, levels = app.table("order_lines"), app.table("stock_levels")
    products, warehouses = app.table("products"), app.table("warehouses")
    rows = svc.conn.execute(select(_col(lines, "product"), func.sum(_col(lines, "quantity"))).where(
        _col(lines, "order") == order, lines.sa.c.deleted_at.is_(None), _col(lines, "product").is_not(None))
        .group_by(_col(lines, "product")).order_by(_col(lines, "product"))).all()
    short = []
    for product, need in rows:  # first every shortage, so the reader hears of all of them at once
        level = _level_id(svc, levels, product, warehouse)
        have = _num(svc.conn.execute(select(_col(levels, "on_hand")).where(levels.sa.c.id == level)).scalar()
                    if level is not None else 0)
        if have < _num(need):
            short.append((product, _num(need), have))
    wname = _name(svc, warehouses, warehouse)
    if not short:
        writer = _system(svc)
        mt = app.table("stock_movements")
        for product, need in rows:
            try:
                writer.create(mt, {"type": "out", "product": product, "warehouse": warehouse, "quantity": float(need),
                                   "order": order, "note": _t(svc.access, "taken_note", number=number)[:200]})
            except ValidationFailed:  # someone took it in between: the posting's own check refused
                level = _level_id(svc, levels, product, warehouse)
                have = _num(svc.conn.execute(select(_col(levels, "on_hand")).where(levels.sa.c.id == level))
                            .scalar() if level is not None else 0)
                short.append((product, _num(need), have))
                break
    if short:
        items = ("；" if svc.access.locale.startswith("zh") else "; ").join(
            _t(svc.access, "short_item", product=_name(svc, products, p), need=_fmt(n), have=_fmt(h))
            for p, n, h in short)
        w.refuse("status", _t(svc.access, "short", warehouse=wname, items=items))


def _give_back(svc: RecordService, app: AppDef, order: int, number: str, status: str) -> None:
    mt = app.table("stock_movements")
    qty = _col(mt, "quantity")
    signed = func.sum(qty * case((_col(mt, "type") == "out", -1), else_=1))
    rows = svc.conn.execute(select(_col(mt, "product"), _col(mt, "warehouse"), signed).where(
        _col(mt, "order") == order, mt.sa.c.deleted_at.is_(None))
        .group_by(_col(mt, "product"), _col(mt, "warehouse")).order_by(_col(mt, "product"))).all()
    writer = _system(svc)
    for product, warehouse, net in rows:
        if net is not None and _num(net) < 0:
            writer.create(mt, {"type": "in", "product": product, "warehouse": warehouse, "quantity": float(-_num(net)),
                               "order": order, "note": _t(svc.access, "return_note", number=number, status=status)})


# --- lines -------------------------------------------------------------------------------------------
def _lines(svc: RecordService, app: AppDef, t: TableDef, op: str, writes: list[PlannedWrite]) -> None:
    products = app.table("products")
    parent_key = "order" if t.key == "order_lines" else "quote"
    for w in writes:
        if op == "create" and w.values.get("unit_price") is None and w.values.get("product") is not None:
            price = svc.conn.execute(select(_col(products, "price")).where(
                products.sa.c.id == w.values["product"])).scalar()
            if price is not None:
                w.values["unit_price"] = price
        if parent_key != "order" or svc.origin == "demo":  # demo orders are history: their lines come after
            continue
        orders = app.table("orders")
        parents = {w.values.get("order")} if "order" in w.values else set()
        if w.record_id is not None:
            keys = [k for k in ("order", "product", "quantity") if k in w.values]
            stored = svc.conn.execute(select(*(_col(t, k) for k in ("order", *keys))).where(
                t.sa.c.id == w.record_id)).first()
            if stored is None or all(_same(stored[i + 1], w.values[k]) for i, k in enumerate(keys)):
                continue  # nothing that moves stock changes (a price, a note, or the same values again)
            parents.add(stored[0])
        for order in parents - {None}:
            status = svc.conn.execute(select(_col(orders, "status")).where(orders.sa.c.id == order)).scalar()
            if status in TAKEN:
                w.refuse("order", _t(svc.access, "lines_locked",
                                     status=_choice(orders, "status", status, svc.access.locale)))


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return _num(a) == _num(b)
    except ArithmeticError:
        return bool(a == b)


def register() -> None:
    guards.register("crm_stock", stock_guard, deletes=True)


# --- upgrade from version 1 ------------------------------------------------------------------------
MAIN_WAREHOUSE = "总仓 Main warehouse"


def upgrade_data(svc: Any, app: AppDef, report: dict[str, Any]) -> None:
    """Move version 1's typed numbers into version 2's records (see ``hooks.upgrade``)."""
    writer = RecordService(svc.catalog, svc.conn, Access.system(), origin="upgrade")
    converted = {(c["table"], c["field"]): c for c in report.get("converted") or []}
    products = app.table("products")
    legacy = converted.get(("products", "stock"))
    if legacy is not None:
        col = _col(products, legacy["kept_as"])
        rows = svc.conn.execute(select(products.sa.c.id, col).where(col > 0, products.sa.c.deleted_at.is_(None))
                                .order_by(products.sa.c.id)).all()
        if rows:
            wt = app.table("warehouses")
            wid = svc.conn.execute(select(wt.sa.c.id).where(_col(wt, "name") == MAIN_WAREHOUSE)).scalar()
            if wid is None:
                wid = writer.create(wt, {"name": MAIN_WAREHOUSE, "code": "MAIN"})["id"]
            writer.create_many(app.table("stock_movements"), [
                {"type": "in", "product": pid, "warehouse": wid, "quantity": float(q),
                 "note": "第1版期初库存 Opening stock from version 1"} for pid, q in rows])
        legacy["moved"] = len(rows)
        svc.delete_field(app.key, "products", legacy["kept_as"])
    legacy = converted.get(("quotes", "total"))
    if legacy is not None:
        quotes, lines = app.table("quotes"), app.table("quote_lines")
        col = _col(quotes, legacy["kept_as"])
        has_lines = select(_col(lines, "quote")).where(lines.sa.c.deleted_at.is_(None))
        rows = svc.conn.execute(select(quotes.sa.c.id, col).where(col.is_not(None), quotes.sa.c.id.not_in(has_lines))
                                .order_by(quotes.sa.c.id)).all()
        for i in range(0, len(rows), 500):
            writer.create_many(lines, [{"quote": qid, "quantity": 1, "unit_price": float(total), "discount": 0}
                                       for qid, total in rows[i:i + 500]])
        legacy["moved"] = len(rows)
        svc.delete_field(app.key, "quotes", legacy["kept_as"])
    legacy = converted.get(("campaigns", "won_revenue"))
    if legacy is not None:
        legacy["moved"] = 0  # revenue now comes from the won opportunities linked to the campaign
        svc.delete_field(app.key, "campaigns", legacy["kept_as"])
