"""``car-runtime calibrate``: find the steering servo and ESC pulses live, then save them.

Put the car on a stand (wheels off the ground) and stop anything else driving the PWM
(``sudo systemctl stop car-runtime deepracer-core``), then::

    car-runtime calibrate                                  # interactive, arrow keys
    car-runtime calibrate --show [--json]                  # print (stock JSON with --json)
    car-runtime calibrate --set servo.mid=1460000 motor.polarity=1
    car-runtime calibrate --history                        # previous versions
    car-runtime calibrate --restore 1                      # bring back the newest previous one
    car-runtime calibrate --reset-defaults                 # stock factory values
    car-runtime calibrate --file ./cal.json --output record:cal.jsonl   # try it on a laptop

Every exit of the interactive tool (q, Ctrl-C, SIGTERM, a lost terminal) leaves both
channels at neutral. On a real output (sysfs, a serial device) the guardian process of ``run``
watches it too: frozen (Ctrl-Z, SIGSTOP) or killed, both channels go to the saved neutral
within 100 ms, and after ``fg`` the pulses start again from there.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

COARSE_NS = 10_000
FINE_NS = 1_000
NUDGE_LIMITS_NS = (500_000, 2_500_000)  # standard RC pulse range; beyond it servos stall
KEEPALIVE_S = 0.4  # resend the held pulse (the actuator watchdog is 1 s)
WATCHDOG_S = 1.0
GUARDIAN_DEADLINE_S = 0.1  # frozen or killed this long -> the guardian writes neutral (as run)
SWEEP_STEP_S = 0.04
FIELDS = ("min", "mid", "max")
GUIDE = {
    "servo": "  servo: 2 = wheels straight; 1 / 3 = full lock each way, short of servo whine; "
             "p so the sweep (t) turns LEFT first",
    "motor": "  motor: 2 = wheels stopped; 1 / 3 = shortest / longest pulse to allow; "
             "p so the sweep (t) drives FORWARD first",
}


def add_parser(subparsers) -> None:
    from car_runtime.actuation.output import OUTPUT_GRAMMAR

    p = subparsers.add_parser(
        "calibrate",
        help="set the steering servo and ESC pulses (interactive), show/edit/restore the file",
        description=__doc__.replace("``", "").replace("::\n", ":\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--file", type=Path, default=None, metavar="PATH",
                   help="calibration file (default /opt/aws/deepracer/calibration.json)")
    p.add_argument("--output", default="sysfs", metavar="SPEC",
                   help=f"PWM output for the interactive tool: {OUTPUT_GRAMMAR} (default sysfs)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--show", action="store_true", help="print the calibration and exit")
    g.add_argument("--set", nargs="+", metavar="CHANNEL.FIELD=VALUE",
                   help="set values (servo|motor . min|mid|max in ns, polarity 1|-1), validate, save")
    g.add_argument("--history", action="store_true", help="list the previous versions kept")
    g.add_argument("--restore", type=int, metavar="N", help="make previous version N (1 = newest) current")
    g.add_argument("--reset-defaults", action="store_true", help="save the stock factory calibration")
    p.add_argument("--json", action="store_true", help="with --show/--history: JSON (--show: stock layout)")
    p.add_argument("--no-guardian", dest="guardian", action="store_false",
                   help="interactive tool without the guardian process (only if it cannot start)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from car_runtime.actuation import calibration as c
    from car_runtime.errors import ConfigError

    path = Path(args.file) if args.file else c.DEFAULT_CALIBRATION_PATH
    if args.json and not (args.show or args.history):
        raise ConfigError("--json goes with --show or --history")
    if args.show:  # a missing file: the stock defaults everything else uses, with a warning
        cal = c.load_calibration(path, missing="defaults")
        title = "calibration" if path.exists() else "stock defaults (no file yet) for"
        print(c.dumps_stock(cal), end="") if args.json else print(format_table(cal, path, title))
        return 0
    if args.set:
        cal = c.load_calibration(path, missing="defaults")
        cal = cal.with_values(parse_assignments(args.set))
        c.save_calibration(cal, path)
        print(format_table(cal, path, title="saved"))
        return 0
    if args.history:
        return _print_history(path, as_json=args.json)
    if args.restore is not None:
        cal = c.restore_history(path, args.restore)
        print(format_table(cal, path, title=f"restored version {args.restore} to"))
        return 0
    if args.reset_defaults:
        cal = c.Calibration.defaults()
        c.save_calibration(cal, path)
        print(format_table(cal, path, title="saved stock defaults to"))
        return 0
    return interactive(path, args.output, guardian=args.guardian)


# --------------------------------------------------------------------------- non-interactive


def parse_assignments(items: list[str]) -> dict[str, int]:
    from car_runtime.errors import CalibrationError

    out: dict[str, int] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise CalibrationError(f"--set {item!r}: use CHANNEL.FIELD=VALUE, e.g. servo.mid=1450000")
        try:
            out[key.strip()] = int(value.strip())
        except ValueError:
            raise CalibrationError(f"--set {item!r}: {value!r} is not an integer (pulses are in ns)") from None
    return out


def format_table(cal, path: Path, title: str = "calibration") -> str:
    from car_runtime.actuation.calibration import console_units

    lines = [f"{title} {path}", f"{'channel':<8}{'min':>10}{'mid':>10}{'max':>10}{'polarity':>10}   (ns)"]
    for name, what in (("servo", "steering, PWM channel 1"), ("motor", "ESC, PWM channel 0")):
        ch = cal.channel(name)
        lines.append(f"{name:<8}{ch.min_ns:>10}{ch.mid_ns:>10}{ch.max_ns:>10}{ch.polarity:>+10}   {what}")
    for name in ("servo", "motor"):
        ch = cal.channel(name)
        ui = " / ".join(f"{console_units(name, v):.1f}" for v in (ch.min_ns, ch.mid_ns, ch.max_ns))
        lines.append(f"{name} in web-console units (min / mid / max): {ui}")
    return "\n".join(lines)


def _print_history(path: Path, *, as_json: bool) -> int:
    from car_runtime.actuation.calibration import list_history

    entries = list_history(path)
    if as_json:
        print(json.dumps([
            {"n": e.n, "replaced_utc": e.replaced_utc, "saved_utc": e.saved_utc, "file": str(e.path),
             "calibration": e.calibration.to_stock_dict() if e.calibration else None, "error": e.error}
            for e in entries
        ], indent=2))
        return 0
    if not entries:
        print(f"no history for {path} yet (previous versions are kept from the first save on)")
        return 0
    print(f"previous versions of {path} (restore with --restore N)")
    print(f"{'n':>3}  {'replaced (UTC)':<26}{'servo min/mid/max pol':<32}motor min/mid/max pol")
    for e in entries:
        if e.calibration is None:
            desc = f"invalid: {e.error}"
        else:
            s, m = e.calibration.servo, e.calibration.motor
            desc = (f"{s.min_ns}/{s.mid_ns}/{s.max_ns} {s.polarity:+d}".ljust(32)
                    + f"{m.min_ns}/{m.mid_ns}/{m.max_ns} {m.polarity:+d}")
        print(f"{e.n:>3}  {e.replaced_utc:<26}{desc}")
    return 0


# --------------------------------------------------------------------------- interactive


def interactive(path: Path, output_spec: str, *, guardian: bool = True) -> int:
    from car_runtime.actuation.calibration import Calibration, load_calibration
    from car_runtime.actuation.output import Actuator, open_output
    from car_runtime.errors import CalibrationError, ConfigError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ConfigError("the interactive calibrate needs a terminal; in scripts use --show / --set")
    notice = ""
    try:
        cal = load_calibration(path, missing="defaults")
        if not path.exists():
            notice = f"{path} does not exist: starting from the stock defaults"
    except CalibrationError as exc:
        cal = Calibration.defaults()
        notice = f"{exc} -- starting from the stock defaults"

    import curses

    def _raise_interrupt(signum, frame):  # SIGTERM / lost terminal: unwind to neutral
        raise KeyboardInterrupt

    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        output = open_output(output_spec, cal)
        with Actuator(output, cal, deadline_s=WATCHDOG_S) as act:
            if guardian:
                from car_runtime.runtime import attach_guardian

                attach_guardian(act, GUARDIAN_DEADLINE_S, to_disable="pass --no-guardian")
            session = CalibrateSession(act, cal, path, output_spec, notice)
            curses.wrapper(session.loop)
            return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class CalibrateSession:
    """The interactive tool's state and key handling (drawn with curses)."""

    def __init__(self, act, cal, path: Path, output_spec: str, notice: str = "") -> None:
        self.act = act
        self.path = path
        self.output_spec = output_spec
        self.saved = cal
        self.draft = {n: dict(zip((*FIELDS, "polarity"), _fields(cal.channel(n)))) for n in ("servo", "motor")}
        self.channel = "servo"
        self.pulse = {"servo": cal.servo.mid_ns, "motor": cal.motor.mid_ns}
        self.status = notice or "ready"
        self.quit_armed = False
        self.last_send = 0.0

    # ---- output
    def send(self, event: str) -> None:
        from car_runtime.timing import now_s

        self.act.raw(self.pulse["servo"], self.pulse["motor"], event=event, channel=self.channel)
        self.last_send = now_s()

    def centre_all(self, event: str) -> None:
        for n in ("servo", "motor"):
            self.pulse[n] = self.draft[n]["mid"]
        self.send(event)

    def dirty(self) -> bool:
        return any(self.draft[n] != dict(zip((*FIELDS, "polarity"), _fields(self.saved.channel(n))))
                   for n in ("servo", "motor"))

    def draft_calibration(self):
        from car_runtime.actuation.calibration import Calibration

        return Calibration.defaults().with_values(
            {f"{n}.{k}": v for n in ("servo", "motor") for k, v in self.draft[n].items()}
        )

    def check_guardian(self) -> None:
        """A guardian trip (the tool was frozen): the channels are at the saved neutral, so the
        pulses start again from there. A lost guardian ends the tool (exit 6, at neutral)."""
        from car_runtime.errors import GuardianLostError

        failure = self.act.guardian_failure
        if failure is not None:
            raise GuardianLostError(f"guardian lost ({failure}): both channels are at neutral; "
                                    "start calibrate again")
        trip = self.act.take_guardian_trip()
        if trip is not None:
            for n in ("servo", "motor"):
                self.pulse[n] = self.saved.channel(n).mid_ns
            self.status = (f"the guardian put both channels at neutral ({trip['reason']}, "
                           f"{trip['gap_ms']:.0f} ms): pulses back at the saved mids")

    # ---- keys
    def handle(self, key: int) -> bool:
        """Apply one key; False means quit."""
        import curses

        ch = self.channel
        step = {curses.KEY_LEFT: -COARSE_NS, curses.KEY_RIGHT: COARSE_NS, curses.KEY_DOWN: -FINE_NS,
                curses.KEY_UP: FINE_NS, ord("h"): -COARSE_NS, ord("l"): COARSE_NS, ord("j"): -FINE_NS,
                ord("k"): FINE_NS}.get(key)
        if key != ord("q"):
            self.quit_armed = False
        if step is not None:
            lo, hi = NUDGE_LIMITS_NS
            self.pulse[ch] = min(hi, max(lo, self.pulse[ch] + step))
            self.send("nudge")
            self.status = f"{ch} pulse {self.pulse[ch]} ns"
        elif key in (ord("\t"), ord("s"), ord("m")):
            self.channel = {ord("s"): "servo", ord("m"): "motor"}.get(key, "motor" if ch == "servo" else "servo")
            self.centre_all("select")
            self.status = f"adjusting {self.channel}"
        elif key in (ord("1"), ord("2"), ord("3")):
            field = FIELDS[key - ord("1")]
            self.draft[ch][field] = self.pulse[ch]
            self.status = f"{ch} {field} = {self.pulse[ch]} ns (w to save)"
        elif key == ord("p"):
            self.draft[ch]["polarity"] *= -1
            self.status = f"{ch} polarity {self.draft[ch]['polarity']:+d} (w to save)"
        elif key == ord("c"):
            self.centre_all("centre")
            self.status = "both channels at mid"
        elif key == ord("t"):
            return self.sweep()
        elif key == ord("w"):
            self.save()
        elif key == ord("q"):
            if self.dirty() and not self.quit_armed:
                self.quit_armed = True
                self.status = "unsaved changes: w saves, q again quits without saving"
            else:
                return False
        elif key == 3:  # Ctrl-C arriving as a key (raw terminals)
            raise KeyboardInterrupt
        return True

    def save(self) -> None:
        from car_runtime.actuation.calibration import save_calibration
        from car_runtime.errors import CalibrationError

        try:
            cal = self.draft_calibration()
            save_calibration(cal, self.path)
        except CalibrationError as exc:
            self.status = f"not saved: {exc}"
            return
        self.saved = cal
        self.act.set_calibration(cal)  # neutral on exit = the values just saved
        self.status = f"saved {self.path} (previous version kept in history)"

    def sweep(self) -> bool:
        """Drive the selected channel through its draft range: 0 -> +1 -> -1 -> 0. Any key stops."""
        from car_runtime.actuation.calibration import ChannelCalibration
        from car_runtime.errors import CalibrationError

        ch = self.channel
        d = self.draft[ch]
        try:
            cc = ChannelCalibration(d["min"], d["mid"], d["max"], d["polarity"])
        except CalibrationError as exc:
            self.status = f"cannot sweep {ch}: {exc}"
            return True
        n = 20
        values = [i / n for i in range(n + 1)] + [1 - 2 * i / (2 * n) for i in range(1, 2 * n + 1)]
        values += [-1 + i / n for i in range(1, n + 1)]
        self.status = f"sweeping {ch} (any key stops)"
        self.scr.timeout(int(SWEEP_STEP_S * 1000))
        try:
            for v in values:
                self.pulse[ch], _ = cc.to_duty_ns(v)
                self.send("sweep")
                self.draw()
                if self.scr.getch() != -1:
                    self.status = "sweep stopped"
                    break
            else:
                self.status = f"sweep of {ch} done"
        finally:
            self.scr.timeout(100)
            self.pulse[ch] = d["mid"]
            self.send("sweep-end")
        return True

    # ---- screen
    def loop(self, scr) -> None:
        import curses

        from car_runtime.timing import now_s

        self.scr = scr
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        scr.keypad(True)
        scr.timeout(100)
        while True:
            self.check_guardian()
            self.draw()
            key = scr.getch()
            if key == -1:
                if now_s() - self.last_send > KEEPALIVE_S:
                    self.send("hold")
                continue
            if not self.handle(key):
                return

    def draw(self) -> None:
        import curses

        from car_runtime.actuation.calibration import console_units

        scr = self.scr
        scr.erase()
        p = self.pulse[self.channel]
        rows = [
            f"car-runtime calibrate   file {self.path}   output {self.output_spec}",
            "WHEELS OFF THE GROUND. Nothing else may drive the PWM now.",
            "",
        ]
        for n, label in (("servo", "steering servo"), ("motor", "throttle / ESC")):
            mark = ">" if n == self.channel else " "
            rows.append(f" {mark} {label:<15} pulse {self.pulse[n]} ns  "
                        f"({self.pulse[n] / 1e6:.4f} ms, console {console_units(n, self.pulse[n]):+.1f})")
        rows += ["", f"   {'':<7}{'min':>10}{'mid':>10}{'max':>10}{'polarity':>10}"]
        for n in ("servo", "motor"):
            d = self.draft[n]
            rows.append(f"   {n:<7}{d['min']:>10}{d['mid']:>10}{d['max']:>10}{d['polarity']:>+10}")
        rows += [
            "",
            f"  left/right  -/+{COARSE_NS} ns     down/up  -/+{FINE_NS} ns     (h l / j k)",
            "  1 2 3  mark pulse as min / mid / max     p  flip polarity     c  centre",
            "  tab s m  choose channel     t  sweep test     w  save     q  quit (neutral)",
            GUIDE[self.channel],
            "",
            f"  {'*' if self.dirty() else ' '} {self.status}",
            f"  now: {self.channel} at {p} ns",
        ]
        h, w = scr.getmaxyx()
        for y, text in enumerate(rows[: max(0, h - 1)]):
            try:
                scr.addnstr(y, 0, text, max(1, w - 1))
            except curses.error:
                pass
        scr.refresh()


def _fields(ch) -> tuple[int, int, int, int]:
    return ch.min_ns, ch.mid_ns, ch.max_ns, ch.polarity
