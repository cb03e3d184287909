"""The CRM's demo data: customers and everything around them, bilingual and consistent across links and dates.

``formwork template install crm --demo`` (and ``formwork init --with-crm``) run :func:`generate` through
``formwork.runtime.demo.generate_demo``, which picks the writer: records through ``RecordService`` for
small runs (so the demo also proves the template's own rules accept realistic data), straight into the
physical tables for large ones (``formwork demo crm --customers 1000000``). The demo users below share
one password (``FORMWORK_DEMO_PASSWORD``, default ``formwork-demo``).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from formwork.metadata.catalog import TableDef
from formwork.runtime.demo import DemoRun, DemoUser, Pools

UNIT = "customers"  # what ``--customers`` and the sizes count

#: the demo reads naturally in the language it is installed in (``formwork init --language``, the gallery's
#: page language, the API's ``language``): every name and text below exists in each language
# username, display name, role, team, manages the team
USERS_BY_LANGUAGE: dict[str, list[DemoUser]] = {
    "zh-CN": [
        ("sysadmin", "系统管理员", "system_admin", None, False),
        ("manager1", "张伟", "sales_manager", "east", True),
        ("manager2", "陈静", "sales_manager", "south", True),
        ("am1", "李娜", "account_manager", "east", False),
        ("am2", "王磊", "account_manager", "east", False),
        ("am3", "王芳", "account_manager", "south", False),
        ("am4", "刘洋", "account_manager", "south", False),
        ("exec1", "陈杰", "executive", None, False),
    ],
    "en": [
        ("sysadmin", "System Admin", "system_admin", None, False),
        ("manager1", "David Zhang", "sales_manager", "east", True),
        ("manager2", "Emily Chen", "sales_manager", "south", True),
        ("am1", "Lina Li", "account_manager", "east", False),
        ("am2", "James Wilson", "account_manager", "east", False),
        ("am3", "Fiona Wang", "account_manager", "south", False),
        ("am4", "Leo Liu", "account_manager", "south", False),
        ("exec1", "Jack Chen", "executive", None, False),
    ],
}
DEMO_USERS = USERS_BY_LANGUAGE["zh-CN"]
TEAMS_BY_LANGUAGE = {"zh-CN": {"east": "华东销售部", "south": "华南销售部"},
                     "en": {"east": "East sales", "south": "South sales"}}
# (Chinese name, English name, model, Chinese unit, English unit, price)
_PRODUCTS = [
    ("云端CRM标准版", "Cloud CRM Standard", "CRM-STD", "套", "set", 19800),
    ("云端CRM企业版", "Cloud CRM Enterprise", "CRM-ENT", "套", "set", 59800),
    ("数据分析模块", "Analytics module", "BI-100", "套", "set", 12800),
    ("移动销售App", "Mobile sales app", "MOB-10", "用户/年", "user/year", 980),
    ("客服工单系统", "Service desk", "SVC-200", "套", "set", 25800),
    ("呼叫中心集成", "Call centre integration", "CTI-30", "坐席", "seat", 3600),
    ("实施服务", "Implementation", "IMP-D", "人天", "person-day", 2500),
    ("培训服务", "Training", "TRN-D", "人天", "person-day", 1800),
    ("年度维保", "Annual maintenance", "MNT-Y", "年", "year", 8800),
    ("工业网关", "Industrial gateway", "IG-500", "台", "pcs", 4200),
    ("智能传感器套件", "Smart sensor kit", "SSK-20", "套", "kit", 1350),
    ("边缘服务器", "Edge server", "ES-2U", "台", "unit", 36500),
    ("条码扫描枪", "Barcode scanner", "BS-7", "把", "pcs", 690),
    ("标签打印机", "Label printer", "LP-4", "台", "pcs", 1580),
    ("ERP 连接器", "ERP connector", "ERP-C", "许可", "licence", 15800),
    ("数据迁移服务", "Data migration", "DM-S", "项", "project", 22000),
    ("短信包（1 万条）", "SMS package (10k)", "SMS-10K", "包", "package", 450),
    ("邮件营销包", "Email marketing pack", "EM-50K", "包", "package", 1200),
    ("高级技术支持", "Premium support", "SUP-P", "年", "year", 16800),
    ("安全审计", "Security audit", "SEC-A", "项", "project", 28000),
]
_WAREHOUSES = [
    ("上海中心仓", "Shanghai distribution centre", "SH-01", "上海市嘉定区叶城路 1288 号",
     "1288 Yecheng Road, Jiading, Shanghai"),
    ("广州仓", "Guangzhou warehouse", "GZ-01", "广州市黄埔区科学大道 66 号",
     "66 Kexue Avenue, Huangpu, Guangzhou"),
    ("北京仓", "Beijing warehouse", "BJ-01", "北京市大兴区亦庄经济开发区荣华南路 2 号",
     "2 Ronghua South Road, Yizhuang, Beijing"),
]
TEXT: dict[str, dict[str, Any]] = {
    "zh-CN": {
        "products": [(zh, model, unit, price) for zh, _en, model, unit, _u, price in _PRODUCTS],
        "warehouses": [(zh, code, addr) for zh, _en, code, addr, _a in _WAREHOUSES],
        "articles": [
            ("如何重置密码", "faq"), ("导入客户数据的步骤", "howto"), ("发票开具常见问题", "faq"),
            ("移动App无法登录的排查", "troubleshooting"), ("退换货政策", "policy"), ("数据备份与恢复", "howto"),
            ("如何连接 ERP 连接器", "howto"), ("传感器没有数据", "troubleshooting"), ("保修与退货说明", "policy"),
            ("结算周期常见问题", "faq"), ("设备安装指南", "howto"), ("打印机卡纸的处理", "troubleshooting"),
            ("服务级别协议说明", "policy"), ("配置单点登录", "howto"), ("报表导出为Excel", "howto"),
            ("升级到企业版", "faq")],
        "campaigns": [
            ("春季新品发布会", "seminar", "offline"), ("中国国际工业博览会", "exhibition", "offline"),
            ("微信公众号推广", "social", "wechat"), ("搜索引擎竞价", "online", "search"),
            ("第二季度客户通讯", "email", "email"), ("线上研讨会：数据驱动销售", "online", "email"),
            ("微博话题营销", "social", "weibo"), ("华南渠道伙伴大会", "seminar", "offline"),
            ("年终促销", "email", "email"), ("智能制造论坛", "exhibition", "offline")],
        "segments": ["制造业A类客户", "零售中小客户", "华东新客户", "老客户"],
        "stock_notes": ["期初入库", "采购入库"],
        "subjects": {
            "call": ["电话回访", "跟进电话", "需求沟通电话", "价格沟通"],
            "visit": ["上门拜访", "现场拜访", "现场演示", "参观工厂"],
            "email": ["发送报价邮件", "发送方案", "发送产品手册", "会议纪要"],
            "meeting": ["方案评审会", "项目启动会", "季度回顾", "商务谈判"],
            "wechat": ["微信沟通", "微信跟进", "微信发送资料", "微信问候"]},
        "lost_reasons": ["价格太高", "选择了竞争对手", "预算取消", "迟迟没有决定"],
        "plans": ["安排技术交流", "准备产品演示", "提交方案书", "拜访财务总监", "组织试用", "安排标杆客户参观"],
        "tickets": {
            "consult": ["咨询产品功能", "如何导出报表？", "询问价格方案", "咨询许可证数量"],
            "complaint": ["响应太慢", "发票开错了", "实施延期投诉", "联系不上销售"],
            "repair": ["设备无法开机", "传感器离线", "打印机卡纸", "服务器风扇噪音大"],
            "suggestion": ["建议增加导出功能", "希望增加深色模式", "希望支持微信登录", "希望增加报表模板"]},
        "results": ["已解决", "已更换设备", "已提供临时方案", "已退款"],
        "deals": ["CRM项目", "设备升级", "数据平台", "服务续约", "二期扩容"],
        "contracts": ["销售合同", "服务协议", "采购合同", "软件许可协议"],
        "measures": ["安排高层拜访，提供年度折扣", "免费升级并做一次服务回顾", "更换客户经理，加强回访",
                     "升级给产品团队处理", "提供竞品对比方案"],
    },
    "en": {
        "products": [(en, model, unit, price) for _zh, en, model, _u, unit, price in _PRODUCTS],
        "warehouses": [(en, code, addr) for _zh, en, code, _a, addr in _WAREHOUSES],
        "articles": [
            ("How to reset a password", "faq"), ("Importing customer data step by step", "howto"),
            ("Invoicing FAQ", "faq"), ("The mobile app won't sign in", "troubleshooting"),
            ("Returns and exchanges policy", "policy"), ("Backing up and restoring data", "howto"),
            ("How to connect the ERP connector", "howto"), ("Sensor shows no data", "troubleshooting"),
            ("Warranty and returns policy", "policy"), ("Billing cycle FAQ", "faq"),
            ("Installing the hardware", "howto"), ("Printer paper jams", "troubleshooting"),
            ("Our service level agreement", "policy"), ("Setting up SSO", "howto"),
            ("Exporting reports to Excel", "howto"), ("Upgrading to the enterprise edition", "faq")],
        "campaigns": [
            ("Spring product launch", "seminar", "offline"), ("China International Industry Fair", "exhibition",
                                                               "offline"),
            ("WeChat official account promotion", "social", "wechat"), ("Search ads", "online", "search"),
            ("Customer newsletter Q2", "email", "email"), ("Webinar: data-driven sales", "online", "email"),
            ("Weibo topic campaign", "social", "weibo"), ("South China partner summit", "seminar", "offline"),
            ("Year-end promotion", "email", "email"), ("Smart manufacturing forum", "exhibition", "offline")],
        "segments": ["Key manufacturers", "SMB retail", "New customers in East China", "Existing customers"],
        "stock_notes": ["Opening stock", "Purchase receipt"],
        "subjects": {
            "call": ["Check-in call", "Follow-up call", "Requirements call", "Pricing call"],
            "visit": ["On-site visit", "Customer visit", "Live demo", "Plant tour"],
            "email": ["Sent the quote", "Sent proposal", "Product brochure", "Meeting notes"],
            "meeting": ["Solution review", "Kick-off meeting", "Quarterly review", "Commercial negotiation"],
            "wechat": ["WeChat chat", "WeChat follow-up", "Sent documents on WeChat", "WeChat check-in"]},
        "lost_reasons": ["Price too high", "Chose a competitor", "Budget cancelled", "No decision"],
        "plans": ["Technical workshop", "Prepare demo", "Submit the proposal", "Meet the CFO", "Run a trial",
                  "Reference visit"],
        "tickets": {
            "consult": ["Question about features", "How do I export reports?", "Pricing question",
                        "Question about licences"],
            "complaint": ["Responses are too slow", "Invoice is wrong", "Implementation is late",
                          "Sales rep unreachable"],
            "repair": ["Device won't start", "Sensor offline", "Printer paper jam", "Server fan noise"],
            "suggestion": ["Add an export button", "Add dark mode", "Support WeChat sign-in", "More report templates"]},
        "results": ["Resolved", "Device replaced", "Workaround given", "Refunded"],
        "deals": ["CRM project", "Equipment upgrade", "Data platform", "Service renewal", "Phase two expansion"],
        "contracts": ["Sales contract", "Service agreement", "Purchase contract", "Licence agreement"],
        "measures": ["Executive visit with a yearly discount", "Offered a free upgrade and a service review",
                     "New account manager, more check-ins", "Escalated to the product team",
                     "Sent a comparison with the competitor"],
    },
}
LOST_REASONS = ["price", "service", "competitor", "closed", "other"]


@dataclass
class Ctx:
    rng: random.Random
    pools: Pools
    now: dt.datetime
    users: dict[str, int]
    ams: list[int]
    teams: dict[int, list[int]]  # manager id -> account manager ids
    products: list[tuple[int, Decimal]] = field(default_factory=list)
    warehouses: list[int] = field(default_factory=list)
    campaigns: list[int] = field(default_factory=list)
    text: dict[str, Any] = field(default_factory=lambda: TEXT["zh-CN"])  # the demo's words, in one language

    @property
    def today(self) -> dt.date:
        return self.now.date()

    def pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def weighted(self, pairs: Sequence[tuple[Any, float]]) -> Any:
        return self.rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]

    def between(self, a: dt.datetime, b: dt.datetime) -> dt.datetime:
        if b <= a:
            return a
        return a + dt.timedelta(seconds=self.rng.randrange(int((b - a).total_seconds()) or 1))


def _ts(d: dt.datetime) -> dt.datetime:
    return d.replace(microsecond=0)


def _money(x: float) -> Decimal:
    return Decimal(str(round(x, 2)))


class CrmDemo:
    """Customers and everything around them, in link order, one chunk of customers at a time."""

    def __init__(self, run: DemoRun, ctx: Ctx) -> None:
        self.run = run
        self.app = run.app
        self.c = ctx
        self.used_names: set[str] = set()

    def t(self, key: str) -> TableDef:
        return self.app.table(key)

    def put(self, key: str, rows: list[dict[str, Any]], meta: list[tuple[dt.datetime, int | None]]) -> list[int]:
        return self.run.put(key, rows, meta)

    def company_name(self) -> str:
        """Customer names are unique: a taken name gets a branch number."""
        base = self.c.pick(self.c.pools.companies)
        name, n = base, 1
        while name in self.used_names:
            n += 1
            name = f"{base}（{n}）"
        self.used_names.add(name)
        return name

    # shared reference data
    def reference(self) -> None:
        c = self.c
        start = c.now - dt.timedelta(days=720)
        pt = self.t("products")
        name_col, price_col = pt.sa.c[pt.field("name").column_name], pt.sa.c[pt.field("price").column_name]
        existing = {r[0]: (r[1], Decimal(r[2] or 0)) for r in self.run.conn.execute(  # a second run reuses them
            select(name_col, pt.sa.c.id, price_col).where(pt.sa.c.deleted_at.is_(None)))}
        rows: list[dict[str, Any]] = [
            {"name": n, "model": m, "unit": u, "price": Decimal(p), "active": True}
            for n, m, u, p in c.text["products"] if n not in existing]
        ids = self.put("products", rows, [(start, c.users["sysadmin"])] * len(rows))
        c.products = [(i, Decimal(r["price"])) for i, r in zip(ids, rows, strict=True)] + list(existing.values())
        self.stock(ids, start)
        ct = self.t("customers")
        col = ct.sa.c[ct.field("name").column_name]
        self.used_names = {r[0] for r in self.run.conn.execute(select(col))}
        rows = [{"title": title, "category": cat, "content": " ".join(c.rng.sample(c.pools.sentences, 3)),
                 "tags": c.rng.sample(["product", "billing", "installation"], c.rng.randrange(1, 3)),
                 "published": c.rng.random() < 0.85} for title, cat in c.text["articles"]]
        self.put("articles", rows, [(c.between(start, c.now), c.users["sysadmin"]) for _ in rows])
        rows, meta = [], []
        campaigns = c.text["campaigns"]
        for i, (name, kind, channel) in enumerate(campaigns):
            begin = (c.now - dt.timedelta(days=40 + 60 * (len(campaigns) - i))).date()
            budget = c.rng.randrange(20, 200) * 1000
            cost = round(budget * c.rng.uniform(0.6, 1.1))
            rows.append({"name": name, "type": kind, "channel": channel, "budget": Decimal(budget),
                         "cost": Decimal(cost), "start_date": begin,
                         "end_date": (begin + dt.timedelta(days=c.rng.randrange(1, 30))),
                         "target_segment": c.pick(c.text["segments"]),
                         "owner": c.pick(list(c.teams))})
            meta.append((dt.datetime.combine(begin, dt.time(9)) - dt.timedelta(days=20), c.pick(list(c.teams))))
        c.campaigns = self.put("campaigns", rows, meta)

    def stock(self, new_products: list[int], start: dt.datetime) -> None:
        """Warehouses, and goods received into them: the stock levels are what the movements add up to
        (posted by the CRM's stock guard; bulk loads write the levels beside the movements)."""
        c = self.c
        wt = self.t("warehouses")
        name_col = wt.sa.c[wt.field("name").column_name]
        existing = {r[0]: r[1] for r in self.run.conn.execute(select(name_col, wt.sa.c.id)
                                                               .where(wt.sa.c.deleted_at.is_(None)))}
        rows = [{"name": n, "code": code, "address": addr, "manager": c.users["sysadmin"], "active": True}
                for n, code, addr in c.text["warehouses"] if n not in existing]
        ids = self.put("warehouses", rows, [(start, c.users["sysadmin"])] * len(rows))
        c.warehouses = ids + [existing[n] for n, _c, _a in c.text["warehouses"] if n in existing]
        moves: list[dict[str, Any]] = []
        meta: list[tuple[dt.datetime, int | None]] = []
        levels: list[dict[str, Any]] = []
        for pid in new_products:
            for wid in ids:
                if c.rng.random() < 0.2:
                    continue
                qty = c.rng.randrange(2, 9) if c.rng.random() < 0.15 else c.rng.randrange(30, 500)
                at = c.between(start, start + dt.timedelta(days=30))
                moves.append({"type": "in", "product": pid, "warehouse": wid, "quantity": qty, "date": _ts(at),
                              "note": c.pick(c.text["stock_notes"])})
                meta.append((at, c.users["sysadmin"]))
                levels.append({"product": pid, "warehouse": wid, "on_hand": qty, "reorder_level": 10})
        lt = self.t("stock_levels")
        before = self.run.conn.execute(select(func.count()).select_from(lt.sa)).scalar() or 0
        self.put("stock_movements", moves, meta)
        after = self.run.conn.execute(select(func.count()).select_from(lt.sa)).scalar() or 0
        if after == before and levels:  # bulk load: no guard ran, so the levels are written beside
            self.put("stock_levels", levels, [(start, c.users["sysadmin"])] * len(levels))

    def targets(self) -> None:
        """Monthly sales targets of every account manager for the past year and this month: the sales dashboard
        sets the orders against them (a rep has monthly or quarterly targets, not both: they would add up)."""
        c = self.c
        tt = self.t("sales_targets")
        if self.run.conn.execute(select(func.count()).select_from(tt.sa)).scalar():
            return
        rows: list[dict[str, Any]] = []
        meta: list[tuple[dt.datetime, int | None]] = []
        first = c.today.replace(day=1)
        names = {uid: name for name, uid in c.users.items()}
        for uid in c.ams:
            for back in range(12, -1, -1):
                y, m = divmod(first.year * 12 + first.month - 1 - back, 12)
                start = dt.date(y, m + 1, 1)
                rows.append({"name": f"{start:%Y-%m} {names.get(uid, '')}", "owner": uid, "period": "month",
                             "start_date": start, "amount": Decimal(c.rng.randrange(8, 30) * 10000)})
                meta.append((dt.datetime.combine(start, dt.time(9)) - dt.timedelta(days=3), c.users["sysadmin"]))
        self.put("sales_targets", rows, meta)

    def chunk(self, n: int) -> None:
        c, rng = self.c, self.c.rng
        now = c.now
        # customers ---------------------------------------------------------------------------
        custs: list[dict[str, Any]] = []
        for _ in range(n):
            status = c.weighted([("prospect", 30), ("active", 52), ("churn_risk", 6), ("churned", 12)])
            age = rng.randrange(20, 300) if status == "prospect" else rng.randrange(200, 720)
            created = now - dt.timedelta(days=age, seconds=rng.randrange(86400))
            in_pool = status != "active" and rng.random() < 0.3
            owner = None if in_pool else c.pick(c.ams)
            custs.append({"status": status, "created": created, "owner": owner, "churn_day": None,
                          "last_touch": None, "previous": c.pick(c.ams) if in_pool else None})
        rows = []
        for k in custs:
            name = self.company_name()
            row = {"name": name, "industry": c.pick(["manufacturing", "retail", "finance", "it", "education",
                                                     "healthcare", "other"]),
                   "level": c.weighted([("A", 15), ("B", 45), ("C", 40)]),
                   "source": c.pick(["referral", "website", "exhibition", "cold_call", "campaign", "partner"]),
                   "region": c.weighted([("east", 35), ("south", 25), ("north", 20), ("central", 10), ("west", 7),
                                         ("overseas", 3)]),
                   "status": k["status"], "owner": k["owner"],
                   "credit_rating": c.pick(["AAA", "AA", "A", "B", "C"]),
                   "credit_limit": Decimal(rng.randrange(5, 200) * 10000),
                   "tags": rng.sample(["vip", "strategic", "government"], rng.choice([0, 0, 1, 1, 2])) or None,
                   "phone": c.pick(c.pools.phones), "website": f"https://www.example-{rng.randrange(10**6)}.com",
                   "address": c.pick(c.pools.addresses)}
            if k["previous"] is not None:
                row["previous_owner"] = k["previous"]
                row["released_at"] = _ts(c.between(k["created"], now - dt.timedelta(days=1)))
            elif k["owner"] is not None and rng.random() < 0.4:
                k["claimed"] = c.between(k["created"], now - dt.timedelta(days=2))
                row["claimed_at"] = _ts(k["claimed"])
            rows.append(row)
        cust_ids = self.put("customers", rows, [(k["created"], k["owner"] or k["previous"]) for k in custs])
        for k, cid in zip(custs, cust_ids, strict=True):
            k["id"] = cid
            k["seller"] = k["owner"] or k["previous"]
        # contacts -----------------------------------------------------------------------------
        rows, meta = [], []
        contact_of: dict[int, list[int]] = {}
        for k in custs:
            for j in range(rng.choice([1, 1, 2, 2, 3])):
                person = c.pick(c.pools.people)
                rows.append({"name": person, "customer": k["id"], "title": c.pick(c.pools.jobs),
                             "phone": c.pick(c.pools.phones), "email": f"contact{rng.randrange(10**7)}@example.com",
                             "primary": j == 0, "owner": k["seller"]})
                meta.append((c.between(k["created"], k["created"] + dt.timedelta(days=7)), k["seller"]))
        ids = self.put("contacts", rows, meta)
        for r, cid in zip(rows, ids, strict=True):
            contact_of.setdefault(r["customer"], []).append(cid)
        # activities: most owned customers were followed up recently, a few are about to go stale ----
        rows, meta = [], []
        for k in custs:
            count = rng.randrange(1, 5)
            for j in range(count):
                if j == count - 1 and k["owner"] is not None:
                    days_ago = c.weighted([(rng.randrange(0, 22), 88), (rng.randrange(26, 30), 8),
                                           (rng.randrange(31, 60), 4)])
                    when = now - dt.timedelta(days=days_ago, seconds=rng.randrange(3600, 36000))
                    when = max(when, k["created"])
                else:
                    when = c.between(k["created"], now - dt.timedelta(days=5))
                kind = c.pick(list(c.text["subjects"]))
                rows.append({"subject": c.pick(c.text["subjects"][kind]), "type": kind, "date": _ts(when),
                             "customer": k["id"], "contact": c.pick(contact_of[k["id"]]),
                             "summary": c.pick(c.pools.sentences), "owner": k["seller"]})
                meta.append((when, k["seller"]))
        self.put("activities", rows, meta)
        # opportunities ----------------------------------------------------------------------------
        rows, meta, opps = [], [], []
        stages = [("lead", 18), ("qualified", 16), ("proposal", 14), ("negotiation", 10), ("won", 26), ("lost", 16)]
        for k in custs:
            for _ in range(rng.choice([0, 1, 1, 2])):
                stage = c.weighted(stages)
                created = c.between(k["created"], now - dt.timedelta(days=3))
                amount = _money(rng.randrange(10, 600) * 1000)
                if stage in ("won", "lost"):
                    close = c.between(created, now - dt.timedelta(days=1)).date()
                else:
                    close = (now + dt.timedelta(days=rng.randrange(-10, 180))).date()
                row = {"name": f"{c.pick(c.text['deals'])}"
                               f" - {k['id']}",
                       "customer": k["id"], "source": c.pick(["referral", "website", "exhibition", "campaign",
                                                              "existing"]),
                       "amount": amount, "stage": stage, "expected_close": close,
                       "owner": k["seller"], "account_manager": k["seller"],
                       "stage_changed_at": _ts(c.between(created, now - dt.timedelta(hours=1)))}
                if row["source"] == "campaign" and c.campaigns:
                    row["campaign"] = c.pick(c.campaigns)
                if stage not in ("won", "lost") and rng.random() < 0.6:
                    row["next_follow_up"] = (now + dt.timedelta(days=rng.randrange(0, 14))).date()
                if stage == "lost":
                    row["lost_reason"] = c.pick(c.text["lost_reasons"])
                rows.append(row)
                meta.append((created, k["seller"]))
                opps.append((k, stage, close, amount))
        opp_ids = self.put("opportunities", rows, meta)
        # development plans and quotes --------------------------------------------------------------
        plans, pmeta, quotes, qmeta = [], [], [], []
        for oid, (k, stage, _close, _amount) in zip(opp_ids, opps, strict=True):
            for _ in range(rng.choice([0, 1, 2])):
                day = c.between(k["created"], now + dt.timedelta(days=20))
                plans.append({"plan": c.pick(c.text["plans"]),
                              "opportunity": oid, "date": day.date(),
                              "result": c.pick(c.pools.sentences) if day < now else None, "owner": k["seller"]})
                pmeta.append((min(day, now) - dt.timedelta(days=3), k["seller"]))
            if stage in ("proposal", "negotiation", "won", "lost"):
                day = c.between(k["created"], now - dt.timedelta(days=1))
                quotes.append({"customer": k["id"], "opportunity": oid, "date": day.date(),
                               "valid_until": (day + dt.timedelta(days=30)).date(),
                               "owner": k["seller"],
                               "status": {"won": "accepted", "lost": "rejected"}.get(stage, c.pick(["draft", "sent"]))})
                qmeta.append((day, k["seller"]))
        self.put("plans", plans, pmeta)
        quote_ids = self.put("quotes", quotes, qmeta)
        qlines, qlmeta = [], []
        for qid, (day, by) in zip(quote_ids, qmeta, strict=True):
            for pid, price in rng.sample(c.products, rng.randrange(1, 4)):
                qlines.append({"quote": qid, "product": pid, "quantity": rng.randrange(1, 10), "unit_price": price,
                               "discount": rng.choice([0, 0, 5, 10, 15])})
                qlmeta.append((day, by))
        self.put("quote_lines", qlines, qlmeta)
        # orders and lines: active customers buy recently, churned ones stopped long ago -------------
        won: dict[int, list[tuple[int, dt.date]]] = {}
        for oid, (k, stage, close, _amount) in zip(opp_ids, opps, strict=True):
            if stage == "won":
                won.setdefault(k["id"], []).append((oid, close))
        orders, ometa, okeys = [], [], []
        for k in custs:
            if k["status"] == "prospect":
                continue
            if k["status"] == "active":
                # a few active customers stopped ordering half a year ago: the churn rule finds them
                last = now - dt.timedelta(days=c.weighted([(rng.randrange(1, 150), 94), (rng.randrange(185, 240), 6)]))
            else:
                last = now - dt.timedelta(days=rng.randrange(200, 400))
            last = max(last, k["created"] + dt.timedelta(days=1))
            k["churn_day"] = last
            n_orders = rng.randrange(1, 5)
            dates = sorted([c.between(k["created"], last) for _ in range(n_orders - 1)] + [last])
            links = list(won.get(k["id"], []))
            for d in dates:
                opp = links.pop(0)[0] if links else None
                orders.append({"customer": k["id"], "opportunity": opp, "order_date": d.date(),
                               "status": c.weighted([("confirmed", 20), ("shipped", 25), ("paid", 50),
                                                     ("cancelled", 5)]),
                               "warehouse": c.pick(c.warehouses) if c.warehouses else None,
                               "owner": k["seller"]})
                ometa.append((d, k["seller"]))
                okeys.append(k)
        order_ids = self.put("orders", orders, ometa)
        lines, lmeta = [], []
        totals: dict[int, Decimal] = {}
        for oid, (d, by) in zip(order_ids, ometa, strict=True):
            for pid, price in rng.sample(c.products, rng.randrange(1, 4)):
                qty = rng.randrange(1, 20)
                unit = _money(float(price) * rng.choice([1, 1, 0.95, 0.9, 0.85]))
                lines.append({"order": oid, "product": pid, "quantity": qty, "unit_price": unit})
                lmeta.append((d, by))
                totals[oid] = totals.get(oid, Decimal(0)) + unit * qty
        self.put("order_lines", lines, lmeta)
        # contracts on a third of the orders; some end within the next 30 days --------------------------
        rows, meta = [], []
        for oid, o, (d, by), k in zip(order_ids, orders, ometa, okeys, strict=True):
            if rng.random() > 0.33 or o["status"] == "cancelled":
                continue
            start = d.date()
            end = start + dt.timedelta(days=365)
            rows.append({"title": f"{c.pick(c.text['contracts'])}"
                                  f" {oid}",
                         "customer": k["id"], "order": oid, "amount": totals.get(oid, Decimal(0)),
                         "start_date": start, "end_date": end,
                         "approval_status": c.weighted([("approved", 80), ("pending", 8), ("draft", 8),
                                                        ("rejected", 4)]),
                         "owner": k["seller"]})
            meta.append((d, by))
        self.put("contracts", rows, meta)
        # campaign members ---------------------------------------------------------------------------
        rows, meta = [], []
        for k in custs:
            if rng.random() < 0.45:
                for camp in rng.sample(c.campaigns, rng.randrange(1, 3)):
                    status = c.weighted([("invited", 50), ("responded", 30), ("converted", 20)])
                    rows.append({"campaign": camp, "customer": k["id"], "contact": c.pick(contact_of[k["id"]]),
                                 "status": status})
                    meta.append((c.between(k["created"], now), k["seller"]))
        self.put("campaign_members", rows, meta)
        # tickets: SLA from priority; a few open ones are past their SLA ---------------------------------
        rows, meta = [], []
        for k in custs:
            if k["status"] == "prospect":
                continue
            for _ in range(rng.choice([0, 1, 1, 2])):
                kind = c.weighted([("consult", 40), ("complaint", 20), ("repair", 30), ("suggestion", 10)])
                opened = c.between(k["created"], now - dt.timedelta(hours=2))
                prio = c.weighted([("low", 30), ("normal", 50), ("high", 20)])
                sla = opened + dt.timedelta(hours={"low": 72, "normal": 48, "high": 8}[prio])
                old = now - opened > dt.timedelta(days=14)
                status = c.weighted([("archived", 70), ("feedback", 30)]) if old else \
                    c.weighted([("new", 15), ("assigned", 25), ("in_progress", 30), ("feedback", 15), ("archived", 15)])
                done = status in ("feedback", "archived")
                row = {"title": c.pick(c.text["tickets"][kind]), "type": kind,
                       "channel": c.pick(["phone", "email", "wechat", "web", "visit"]), "status": status,
                       "priority": prio, "customer": k["id"],
                       "assignee": k["seller"] if status != "new" else None,
                       "request": c.pick(c.pools.sentences), "sla_due": _ts(sla),
                       "escalated": (not done and sla < now) or (done and rng.random() < 0.1)}
                if done:
                    row["handling"] = c.pick(c.pools.sentences)
                    row["result"] = c.pick(c.text["results"])
                    row["satisfaction"] = c.weighted([(5, 40), (4, 30), (3, 15), (2, 10), (1, 5)])
                rows.append(row)
                meta.append((opened, k["seller"]))
        self.put("tickets", rows, meta)
        # lost customers for churned and at-risk customers, spread over the last year --------------------
        rows, meta = [], []
        for k in custs:
            if k["status"] not in ("churned", "churn_risk"):
                continue
            last = k["churn_day"] or k["created"]
            detected = min(now - dt.timedelta(days=1), last + dt.timedelta(days=180 + rng.randrange(0, 40)))
            if k["status"] == "churned":
                detected = now - dt.timedelta(days=rng.randrange(1, 360))
            status = "confirmed" if k["status"] == "churned" else c.weighted([("open", 60), ("paused", 40)])
            rows.append({"customer": k["id"], "detected_at": detected.date(),
                         "last_order_date": last.date(), "reason": c.pick(LOST_REASONS),
                         "measures": c.pick(c.text["measures"]), "status": status, "owner": k["seller"]})
            meta.append((detected, k["seller"]))
        self.put("lost_customers", rows, meta)


def generate(run: DemoRun) -> None:
    """The demo users and teams, the reference data (products, articles, campaigns), then customers in chunks."""
    language = run.language if run.language in TEXT else "zh-CN"
    people = USERS_BY_LANGUAGE[language]
    users = run.ensure_users(people, TEAMS_BY_LANGUAGE[language])
    teams: dict[int, list[int]] = {}
    for username, _n, role, team, _m in people:
        if role == "account_manager":
            manager = next(u for u, _x, r, tm, m in people if m and tm == team)
            teams.setdefault(users[manager], []).append(users[username])
    ctx = Ctx(rng=run.rng, pools=run.pools, now=run.now, users=users,
              ams=[uid for ids in teams.values() for uid in ids], teams=teams, text=TEXT[language])
    gen = CrmDemo(run, ctx)
    gen.reference()
    gen.targets()
    for n in run.chunks():
        gen.chunk(n)
