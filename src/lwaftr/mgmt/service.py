"""The running configuration of one instance, read and changed by requests, sans I/O.

A request is a dict (JSON on the control socket, see :mod:`lwaftr.io.control`)::

    {"op": "get",        "path": P}                -> {"value": text}
    {"op": "set",        "path": P, "value": V}
    {"op": "add",        "path": P, "value": V}     (list entries)
    {"op": "remove",     "path": P}
    {"op": "validate",   "text": T}                 (a whole configuration; nothing applied)
    {"op": "get-config", "bindings": bool, "if_generation": G}
                                                    -> {"text": T, "generation": G, "softwires": N}
                                                       (or {"unchanged": true} if still generation G)
    {"op": "softwires",  "b4": [IPv6, ...]}         -> {"entries": [E, ...], "generation": G}
    {"op": "softwires",  "ipv4": [IPv4, ...], "psid": P (optional)}
    {"op": "softwires",  "from": ROW, "max": N}     -> {"entries": [...], "next": ROW or null}
                                                       (E: [ipv4, psid, psid-length, reserved, b4, br])
    {"op": "load-config","text": T}                 (a whole configuration, replacing the running one)
    {"op": "counters"}                              -> {"counters": {...}}
    {"op": "batch",      "requests": [R, ...]}      (softwire add/remove/set: all or none)
    {"op": "replay",     "records": [J, ...]}       (journal records, see :mod:`lwaftr.config.journal`)

(and, answered by the instance itself: ``ping``, ``monitor``, ``reload`` (the
file and its journal again), ``compact`` (fold the journal into the file now).)

A change that was applied also yields its journal record (:attr:`Result.record`:
what the configuration now is where it changed) and the record that puts
things back (:attr:`Result.undo`), so its owner can write it to disk before
acknowledging it, or take it back.

Changes to softwires (``/softwire-config/binding-table/softwire...``) go
straight into the binding table through :class:`TableEditor` (microseconds,
no other state touched); a request's changes apply all or none.  Other
changes produce a candidate :class:`Config`, validated whole by the loader,
that the caller swaps in (:attr:`Result.config`).  Changing instances or the
control plane needs a restart and is refused.  The reply is ``{"ok": true,
...}`` or ``{"ok": false, "error": message}``; a refused change changes nothing.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lwaftr.bindingtable.edit import EditError, Softwire, TableEditor
from lwaftr.bindingtable.table import SW_OCCUPIED, BindingTable
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import Bindings, Config
from lwaftr.config.snabb import dump_snabb, loads_snabb
from lwaftr.mgmt.paths import PathError, Tree, emit, from_text, get_text, parse_entries, parse_path, remove_at, set_at

SOFTWIRES = ("softwire-config", "binding-table", "softwire")


class RequestError(ValueError):
    """A request refused; nothing was changed."""


@dataclass
class Result:
    reply: dict[str, Any]
    config: Config | None = None          # a candidate configuration to swap in
    table: BindingTable | None = None     # a whole new table to swap in with it
    table_changed: bool = False           # the running table was edited in place
    record: dict[str, Any] | None = None  # the change as a journal record (None: nothing changed)
    undo: dict[str, Any] | None = None    # the record that takes it back (None: cannot be taken back)


def table_bindings(table: BindingTable) -> Bindings:
    """The softwires of a compiled table as a :class:`Bindings`, by (IPv4, PSID)."""
    sw = table.sw_tab
    rows = sw[sw[:, 0] != 0]
    key = rows[:, 0] & ~SW_OCCUPIED
    ipv4 = (key >> np.uint64(16)).astype(np.uint32)
    psid = (key & np.uint64(0xFFFF)).astype(np.uint16)
    order = np.lexsort((psid, ipv4))
    rows, ipv4, psid = rows[order], ipv4[order], psid[order]
    a = table.addr_tab[table.addr_tab != 0]
    a_ip = (a >> np.uint64(32)).astype(np.uint32)
    srt = np.argsort(a_ip)
    at = srt[np.searchsorted(a_ip[srt], ipv4)] if len(ipv4) else np.zeros(0, np.int64)
    plen = ((a[at] >> np.uint64(8)) & np.uint64(0xFF)).astype(np.uint8)
    shift = (a[at] & np.uint64(0xFF)).astype(np.uint8)
    b4 = np.ascontiguousarray(rows[:, 1:3]).astype(">u8").view(np.uint8).reshape(-1, 16)
    brs = [table.br_tab[i].tobytes() for i in range(table.br_tab.shape[0])]
    return Bindings(ipv4=ipv4, psid=psid, psid_length=plen,
                    reserved_ports_bit_count=(16 - plen - shift).astype(np.uint8), b4_ipv6=b4,
                    br_index=rows[:, 3].astype(np.uint16), br_addresses=brs if len(rows) else [],
                    line=np.zeros(len(rows), np.int32))


def _softwire(entry: Tree) -> Softwire:
    """A ``softwire { ... }`` entry -> :class:`Softwire` (RequestError naming the leaf)."""
    def leaf(t: Tree, name: str, default: str | None = None) -> str:
        v = t.leaf(name)
        if v is None:
            if default is None:
                raise RequestError(f"softwire: missing '{name}'")
            return default
        return v
    port_set = next((c for c in entry.children or () if c.keyword == "port-set" and c.children is not None), None)
    known = {"ipv4", "psid", "b4-ipv6", "br-address", "port-set", "padding"}
    for c in entry.children or ():
        if c.keyword not in known:
            raise RequestError(f"softwire: unknown '{c.keyword}'")
    try:
        return Softwire(
            ipv4=int(ipaddress.IPv4Address(leaf(entry, "ipv4"))), psid=int(leaf(entry, "psid")),
            psid_length=int(leaf(port_set, "psid-length")) if port_set else _missing("port-set/psid-length"),
            reserved_ports_bit_count=int(leaf(port_set, "reserved-ports-bit-count", "0")) if port_set else 0,
            b4=ipaddress.IPv6Address(leaf(entry, "b4-ipv6")).packed,
            br=ipaddress.IPv6Address(leaf(entry, "br-address")).packed)
    except ValueError as e:
        if isinstance(e, RequestError):
            raise
        raise RequestError(f"softwire: {e}") from None


def _missing(what: str) -> int:
    raise RequestError(f"softwire: missing '{what}'")


def sw_state(sw: Softwire | None) -> list | None:
    """A softwire's value as a journal record holds it (None: absent)."""
    return None if sw is None else [sw.psid_length, sw.reserved_ports_bit_count, sw.b4.hex(), sw.br.hex()]


def sw_of_state(ipv4: int, psid: int, state: list) -> Softwire:
    plen, reserved, b4, br = state
    return Softwire(ipv4, psid, int(plen), bytes.fromhex(b4), bytes.fromhex(br), int(reserved))


def _version_only(cfg: Config) -> Bindings:
    """No softwires (the table holds them), but the table's version."""
    b = Bindings.empty()
    b.version = cfg.bindings.version
    return b


def _entry_text(sw: Softwire) -> str:
    ps = f"psid-length {sw.psid_length};" + (
        f" reserved-ports-bit-count {sw.reserved_ports_bit_count};" if sw.reserved_ports_bit_count else "")
    return (f"ipv4 {ipaddress.IPv4Address(sw.ipv4)};\npsid {sw.psid};\nb4-ipv6 {ipaddress.IPv6Address(sw.b4)};\n"
            f"br-address {ipaddress.IPv6Address(sw.br)};\nport-set {{ {ps} }}\n")


def warm_up(table: BindingTable) -> None:
    """Load the compiled lookups the requests use (numba's cache: tens of ms on a
    first call), so that the first request is as fast as the next ones."""
    ed = TableEditor(table)
    ed.of_b4(bytes(16))
    ed.of_address(0)
    from lwaftr.bindingtable.edit import port_sets
    port_sets(table.addr_tab, np.zeros(1, np.uint64))


def entry_of(sw: Softwire) -> list:
    """A softwire as the ``softwires`` request answers it."""
    return [str(ipaddress.IPv4Address(sw.ipv4)), sw.psid, sw.psid_length, sw.reserved_ports_bit_count,
            str(ipaddress.IPv6Address(sw.b4)), str(ipaddress.IPv6Address(sw.br))]


class ConfigService:
    """Answers requests against a running configuration and its binding table."""

    def __init__(self, config: Config, table: BindingTable, *, counters=None) -> None:
        self.config = replace(config, bindings=Bindings.empty())    # the table holds the softwires
        self.version = config.bindings.version                      # ... but not the table's version
        self.editor = TableEditor(table)
        self.counters = counters
        self._depth = 0
        self._touched: dict[tuple[int, int], Softwire | None] = {}    # key -> value before the request
        self.generation = 0             # counts changes: a reader holding generation G has seen them all

    @property
    def table(self) -> BindingTable:
        return self.editor.table

    def adopt(self, config: Config, table: BindingTable) -> None:
        """The instance now runs ``config`` with ``table`` (after a reload or a swap)."""
        self.config = replace(config, bindings=Bindings.empty())
        self.version = config.bindings.version
        self.generation += 1
        if table is not self.editor.table:
            self.editor = TableEditor(table)

    # -- requests --------------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> Result:
        op = req.get("op")
        handler = getattr(self, "_op_" + str(op).replace("-", "_"), None)
        if handler is None:
            return Result({"ok": False, "error": f"unknown op {op!r}"})
        top = self._depth == 0
        if top:
            self._touched = {}
        self._depth += 1
        try:
            r = handler(req)
        except (RequestError, PathError, EditError, ConfigError) as e:
            r = Result({"ok": False, "error": str(e)})
        except (KeyError, TypeError) as e:
            r = Result({"ok": False, "error": f"bad request: {e}"})
        finally:
            self._depth -= 1
        if top and r.reply.get("ok"):
            if op != "replay":
                self._record(req, r)
            if r.table_changed or r.config is not None:
                self.generation += 1
        return r

    def _record(self, req: dict[str, Any], r: Result) -> None:
        """Fill in ``r.record`` and ``r.undo`` for an applied change."""
        if self._touched:
            now = {k: self.editor.get(*k) for k in self._touched}
            changed = [k for k, old in self._touched.items() if now[k] != old]
            if changed:
                r.record = {"sw": [[*k, sw_state(now[k])] for k in changed]}
                r.undo = {"sw": [[*k, sw_state(self._touched[k])] for k in changed]}
        elif r.config is not None and req.get("op") in ("set", "remove"):
            r.record = {"req": {k: req[k] for k in ("op", "path", "value") if k in req}}
            r.undo = {"rest": self.text(bindings=False)}
        elif r.config is not None and req.get("op") == "load-config":
            r.record = {"load": req["text"]}

    # -- softwire changes, remembering what was there ----------------------------------------
    def _touch(self, ipv4: int, psid: int) -> None:
        if (ipv4, psid) not in self._touched:
            self._touched[(ipv4, psid)] = self.editor.get(ipv4, psid)

    def _put(self, sw: Softwire, replace: bool = True) -> None:
        self._touch(sw.ipv4, sw.psid)
        self.editor.put(sw, replace=replace)

    def _remove(self, ipv4: int, psid: int) -> None:
        self._touch(ipv4, psid)
        self.editor.remove(ipv4, psid)

    # -- journal records ---------------------------------------------------------------------
    def apply_record(self, rec: dict[str, Any]) -> Result:
        """Make the configuration what journal record ``rec`` says (replaying one
        already applied changes nothing).  A config in the result is for the
        caller to swap in, as for a request."""
        if "sw" in rec:
            entries = [(ipv4, psid, None if state is None else sw_of_state(ipv4, psid, state))
                       for ipv4, psid, state in rec["sw"]]
            for ipv4, psid, sw in entries:          # first what goes, or changes its port-set layout
                old = self.editor.get(ipv4, psid)
                if old is not None and (sw is None or (old.psid_length, old.reserved_ports_bit_count)
                                        != (sw.psid_length, sw.reserved_ports_bit_count)):
                    self._remove(ipv4, psid)
            for ipv4, psid, sw in entries:
                if sw is not None and self.editor.get(ipv4, psid) != sw:
                    self._put(sw)
            return Result({"ok": True}, table_changed=True)
        if "req" in rec:
            r = self.handle(rec["req"])
            if not r.reply["ok"] and rec["req"].get("op") == "remove":
                return Result({"ok": True})                      # already gone
            return r
        if "rest" in rec:
            cfg = loads_snabb(rec["rest"], "<journal>")
            return Result({"ok": True}, config=replace(cfg, bindings=_version_only(cfg), source=self.config.source))
        if "load" in rec:
            return self._op_load_config({"text": rec["load"]})
        raise RequestError(f"unknown journal record {sorted(rec)}")

    def _op_replay(self, req: dict) -> Result:
        """Journal records, in order; stops at the first that fails."""
        out = Result({"ok": True})
        for rec in req["records"]:
            r = self.apply_record(rec)
            if not r.reply["ok"]:
                return r
            out.table_changed |= r.table_changed
            if r.config is not None:
                out.config, out.table = r.config, r.table
        return out

    def text(self, bindings: bool = True) -> str:
        b = table_bindings(self.table) if bindings else Bindings.empty()
        b.version = self.version
        return dump_snabb(replace(self.config, bindings=b))

    def _tree(self, bindings: bool) -> list[Tree]:
        return from_text(self.text(bindings))

    @staticmethod
    def _is_softwires(path: str) -> bool:
        names = tuple(s.name for s in parse_path(path))
        return names[:3] == SOFTWIRES

    @staticmethod
    def _needs_bindings(path: str) -> bool:
        names = tuple(s.name for s in parse_path(path))
        return len(names) < 2 or names[:2] == SOFTWIRES[:2]

    def _candidate(self, root: list[Tree], what: str) -> Result:
        cfg = loads_snabb(emit(root), f"<{what}>")
        if (cfg.instances, cfg.control_plane) != (self.config.instances, self.config.control_plane):
            raise RequestError("changes to instances, interfaces, addresses or the control plane need a restart")
        return Result({"ok": True}, config=replace(cfg, bindings=_version_only(cfg), source=self.config.source))

    def _op_get(self, req: dict) -> Result:
        path = req["path"]
        steps = parse_path(path)
        if self._is_softwires(path) and len(steps) >= 3 and {"ipv4", "psid"} <= steps[2].keys.keys():
            sw = self._find(steps[2].keys)
            entry = [Tree("softwire", None, from_text(_entry_text(sw)))]
            rest = "/" + "/".join(s.name for s in steps[3:])
            return Result({"ok": True, "value": get_text(entry[0].children, rest) if steps[3:]
                           else emit(entry[0].children)})
        return Result({"ok": True, "value": get_text(self._tree(self._needs_bindings(path)), path)})

    def _find(self, keys: dict[str, str]) -> Softwire:
        try:
            ipv4, psid = int(ipaddress.IPv4Address(keys["ipv4"])), int(keys["psid"])
        except ValueError as e:
            raise RequestError(f"softwire keys: {e}") from None
        sw = self.editor.get(ipv4, psid) if 0 <= psid < 1 << 16 else None
        if sw is None:
            raise RequestError(f"no softwire {keys['ipv4']} psid {psid}")
        return sw

    def _op_set(self, req: dict) -> Result:
        path, value = req["path"], str(req["value"])
        steps = parse_path(path)
        if self._is_softwires(path):
            if len(steps) < 3 or not {"ipv4", "psid"} <= steps[2].keys.keys():
                raise RequestError(f"{path}: set one softwire, with [ipv4=...][psid=...]; add or remove entries")
            old = self._find(steps[2].keys)
            entry = Tree("softwire", None, from_text(_entry_text(old)))
            rest = "/" + "/".join(s.name for s in steps[3:])
            if steps[3:]:
                set_at(entry.children, rest, value)
            else:
                body = value.strip()
                if body.startswith("{") and body.endswith("}"):
                    body = body[1:-1]                   # one pair only: "{ ... port-set { ... }}"
                entry.children = parse_entries("{" + body + "}", "softwire")[0].children
            new = _softwire(entry)
            if (new.ipv4, new.psid) != (old.ipv4, old.psid):
                raise RequestError(f"{path}: the keys ipv4 and psid cannot be changed; remove and add")
            self._apply([new], replace_ok=True)
            return Result({"ok": True}, table_changed=True)
        root = self._tree(False)
        set_at(root, path, value)
        return self._candidate(root, f"set {path}")

    def _op_add(self, req: dict) -> Result:
        path, value = req["path"], str(req["value"])
        if tuple(s.name for s in parse_path(path)) == SOFTWIRES:
            sws = [_softwire(e) for e in parse_entries(value, "softwire")]
            self._apply(sws, replace_ok=False)
            return Result({"ok": True, "added": len(sws)}, table_changed=True)
        raise RequestError(f"{path}: entries can be added to {'/' + '/'.join(SOFTWIRES)} while running; "
                           "other lists need a restart")

    def _op_remove(self, req: dict) -> Result:
        path = req["path"]
        steps = parse_path(path)
        if self._is_softwires(path):
            if len(steps) != 3 or not {"ipv4", "psid"} <= steps[2].keys.keys():
                raise RequestError(f"{path}: remove one softwire, with [ipv4=...][psid=...]")
            sw = self._find(steps[2].keys)
            self._remove(sw.ipv4, sw.psid)
            return Result({"ok": True}, table_changed=True)
        root = self._tree(False)
        remove_at(root, path)
        return self._candidate(root, f"remove {path}")

    def _apply(self, sws: list[Softwire], *, replace_ok: bool) -> None:
        """All of ``sws`` or none: on a refusal, what was applied is undone."""
        done: list[tuple[Softwire, Softwire | None]] = []
        try:
            for sw in sws:
                old = self.editor.get(sw.ipv4, sw.psid) if replace_ok else None
                self._put(sw, replace=replace_ok)
                done.append((sw, old))
        except EditError:
            for sw, old in reversed(done):
                if old is None:
                    self.editor.remove(sw.ipv4, sw.psid)
                else:
                    self.editor.put(old)
            raise

    def _op_batch(self, req: dict) -> Result:
        """Softwire changes applied together between two batches: if one is
        refused, those before it are undone and the reply names the refused one."""
        subs = req["requests"]
        undo: list[tuple[int, int, Softwire | None]] = []     # (ipv4, psid, what was there)
        for i, sub in enumerate(subs):
            op, path = sub.get("op"), sub.get("path", "")
            if op not in ("add", "remove", "set") or not self._is_softwires(path):
                self._undo(undo)
                raise RequestError(f"batch request {i}: only softwire add, remove and set can be batched")
            for key in self._keys_of(sub):
                undo.append((*key, self.editor.get(*key)))
            r = self.handle(sub)
            if not r.reply["ok"]:
                self._undo(undo)
                raise RequestError(f"batch request {i} ({op} {path}): {r.reply['error']}")
        return Result({"ok": True, "applied": len(subs)}, table_changed=True)

    def _keys_of(self, sub: dict) -> list[tuple[int, int]]:
        steps = parse_path(sub["path"])
        if sub["op"] == "add":
            return [(e.ipv4, e.psid) for e in map(_softwire, parse_entries(str(sub["value"]), "softwire"))]
        if len(steps) >= 3 and {"ipv4", "psid"} <= steps[2].keys.keys():
            try:
                return [(int(ipaddress.IPv4Address(steps[2].keys["ipv4"])), int(steps[2].keys["psid"]))]
            except ValueError:
                return []
        return []

    def _undo(self, undo: list[tuple[int, int, Softwire | None]]) -> None:
        for ipv4, psid, old in reversed(undo):
            now = self.editor.get(ipv4, psid)
            if old is None and now is not None:
                self.editor.remove(ipv4, psid)
            elif old is not None and now != old:
                self.editor.put(old)

    def _op_validate(self, req: dict) -> Result:
        loads_snabb(req["text"], "<validate>")
        return Result({"ok": True})

    def _op_get_config(self, req: dict) -> Result:
        if req.get("if_generation") == self.generation:
            return Result({"ok": True, "unchanged": True, "generation": self.generation,
                           "softwires": self.table.count})
        return Result({"ok": True, "text": self.text(bool(req.get("bindings", True))),
                       "generation": self.generation, "softwires": self.table.count})

    def _op_softwires(self, req: dict) -> Result:
        """Softwires by B4 address, by IPv4 address (and PSID), or a page of the whole table."""
        out: list[Softwire] = []
        if "b4" in req:
            for a in req["b4"]:
                out += self.editor.of_b4(ipaddress.IPv6Address(a).packed)
        elif "ipv4" in req:
            psid = req.get("psid")
            for a in req["ipv4"]:
                ip = int(ipaddress.IPv4Address(a))
                if psid is None:
                    out += self.editor.of_address(ip)
                elif 0 <= int(psid) < 1 << 16 and (sw := self.editor.get(ip, int(psid))) is not None:
                    out.append(sw)
        else:
            return self._page(int(req.get("from", 0)), int(req.get("max", 10000)))
        return Result({"ok": True, "entries": [entry_of(sw) for sw in out], "generation": self.generation})

    def _page(self, start: int, limit: int) -> Result:
        """Up to ``limit`` softwires from row ``start`` of the table, in table order."""
        import socket
        from lwaftr.bindingtable.edit import port_sets
        t = self.table
        sw = t.sw_tab
        rows = np.flatnonzero(sw[start:, 0] != 0)[:limit] + start
        nxt = int(rows[-1]) + 1 if len(rows) == limit and int(rows[-1]) + 1 < sw.shape[0] else None
        r = sw[rows]
        key = r[:, 0] & ~SW_OCCUPIED
        ip = key >> np.uint64(16)
        plen, shift = port_sets(t.addr_tab, ip)
        raw4 = ip.astype(">u4").tobytes()
        b4 = r[:, 1:3].astype(">u8").tobytes()
        ntop, v4, v6 = socket.inet_ntop, socket.AF_INET, socket.AF_INET6
        brs = [ntop(v6, t.br_tab[i].tobytes()) for i in range(t.br_tab.shape[0])]
        entries = [[ntop(v4, raw4[4 * i:4 * i + 4]), p, k, 16 - k - h, ntop(v6, b4[16 * i:16 * i + 16]), brs[br]]
                   for i, (p, k, h, br) in enumerate(zip((key & np.uint64(0xFFFF)).tolist(), plen.tolist(),
                                                         shift.tolist(), r[:, 3].tolist()))]
        return Result({"ok": True, "entries": entries, "next": nxt, "generation": self.generation})
    def _op_load_config(self, req: dict) -> Result:
        cfg = loads_snabb(req["text"], "<load-config>")
        if (cfg.instances, cfg.control_plane) != (self.config.instances, self.config.control_plane):
            raise RequestError("changes to instances, interfaces, addresses or the control plane need a restart")
        return Result({"ok": True}, config=replace(cfg, bindings=_version_only(cfg), source=self.config.source),
                      table=BindingTable.build(cfg.bindings))

    def _op_counters(self, req: dict) -> Result:
        from lwaftr import counters as C
        return Result({"ok": True, "counters": C.to_dict(self.counters) if self.counters is not None else {}})
