#!/usr/bin/env bash
# Runs the GUI example (examples/gui) in a virtual X server and checks, as a
# person would, that it reacts: builds it, starts Xvfb on a free display,
# launches the app, finds its window with xdotool, clicks Start, waits until
# 45 thumbnails are finished (one of them, img-0037, fails on purpose),
# clicks Cancel, waits for the group to stop, takes
# a screenshot, and checks the app's status lines: the cancel happened, the
# group stopped, every file is accounted for (done + failed + cancelled ==
# total) and no task started after the cancel. Exits non-zero on any failure.
#
#   bash examples/gui/run_xvfb.sh [--save-screenshot]
#
# Needs Xvfb, xdotool and ImageMagick (`apt-get install -y xvfb xdotool
# imagemagick`; .ci/run installs them when missing) and Mesa's software GL
# (libgl1-mesa-dri, libegl-mesa0). Build output goes to $CARGO_TARGET_DIR
# (default examples/gui/target); the screenshot and the app's output to
# $CARGO_TARGET_DIR/xvfb/. --save-screenshot also writes a small copy to
# examples/gui/screenshot.png (the one the README shows). Every wait is
# bounded; the whole run, cold build included, stays under 10 minutes on
# 2 cores. Nothing here uses the network (the build may fetch crates).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
save_screenshot=0
for a in "$@"; do
    case $a in
        --save-screenshot) save_screenshot=1 ;;
        *) echo "usage: $0 [--save-screenshot]" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
out=$CARGO_TARGET_DIR/xvfb
mkdir -p "$out"
app_out=$out/app.out
started_at=$SECONDS

say() { echo "[gui-xvfb $((SECONDS - started_at))s] $*"; }
fail() {
    say "FAILED: $*"
    if [ -s "$app_out" ]; then
        say "last app output:"
        tail -n 20 "$app_out" | sed 's/^/    /'
    fi
    if [ -s "$out/app.err" ]; then
        say "app stderr:"
        tail -n 20 "$out/app.err" | sed 's/^/    /'
    fi
    exit 1
}

for tool in Xvfb xdotool import convert; do
    command -v "$tool" >/dev/null || fail "$tool not found (apt-get install -y xvfb xdotool imagemagick)"
done

xvfb_pid=""
app_pid=""
cleanup() {
    local rc=$?
    # Only the processes this script started, by their ids.
    if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
        kill "$app_pid" 2>/dev/null || true
        wait "$app_pid" 2>/dev/null || true
    fi
    if [ -n "$xvfb_pid" ] && kill -0 "$xvfb_pid" 2>/dev/null; then
        kill "$xvfb_pid" 2>/dev/null || true
        wait "$xvfb_pid" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Build (dev profile without debug info: a cold build takes about 95 s
#    of CPU, 1.5 - 3 minutes on 2 busy cores; bounded at 7 minutes).
say "building the GUI example into $CARGO_TARGET_DIR"
t0=$SECONDS
timeout 420 cargo build --quiet --manifest-path "$here/Cargo.toml" || fail "build failed or took over 420 s"
say "built in $((SECONDS - t0)) s"
bin=$CARGO_TARGET_DIR/debug/manta-gui-example
[ -x "$bin" ] || fail "no binary at $bin"

# 2. A virtual X server on a free display (Xvfb picks it and writes its
#    number to the file when it is ready to take clients).
: >"$out/display"
Xvfb -displayfd 3 -screen 0 1024x720x24 -nolisten tcp 3>"$out/display" 2>"$out/xvfb.log" &
xvfb_pid=$!
for _ in $(seq 100); do
    [ -s "$out/display" ] && break
    kill -0 "$xvfb_pid" 2>/dev/null || fail "Xvfb exited: $(tail -n 3 "$out/xvfb.log")"
    sleep 0.1
done
[ -s "$out/display" ] || fail "Xvfb did not start within 10 s"
export DISPLAY=:$(head -n 1 "$out/display")
say "Xvfb on $DISPLAY"

# 3. The app, printing its status lines to $app_out.
: >"$app_out"
"$bin" --exit-when-stopped >"$app_out" 2>"$out/app.err" &
app_pid=$!

# wait_for SECONDS WHAT CHECK...: polls until CHECK succeeds.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local t=$SECONDS
    until "$@"; do
        kill -0 "$app_pid" 2>/dev/null || fail "the app exited while waiting for $what"
        ((SECONDS - t < limit)) || fail "no $what within ${limit} s"
        sleep 0.1
    done
}
has_line() { grep -q "^status $1\b" "$app_out"; }
# field LINE KEY: the value of KEY=... on the last `status LINE` line.
field() { grep "^status $1\b" "$app_out" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
finished_at_least() { local n; n=$(field progress finished); [ -n "$n" ] && [ "$n" -ge "$1" ]; }

wait_for 60 "first frame (status layout)" has_line layout
wid=$(timeout 10 xdotool search --sync --onlyvisible --name '^manta thumbnails$' | head -n 1) || true
[ -n "$wid" ] || fail "xdotool found no window named 'manta thumbnails'"
say "window $wid: $(xdotool getwindowgeometry "$wid" | tr '\n' ' ')"

# click X,Y: moves the pointer inside the window and clicks (XTEST events).
click() {
    xdotool mousemove --window "$wid" "${1%,*}" "${1#*,}"
    sleep 0.2
    xdotool click 1
}

# 4. Start, wait until some thumbnails are done, Cancel.
say "clicking Start at $(field layout start)"
click "$(field layout start)"
wait_for 10 "reaction to Start (status started)" has_line started
total=$(field started total)
wait_for 120 "45 finished thumbnails" finished_at_least 45
say "$(grep '^status progress' "$app_out" | tail -n 1)"
say "clicking Cancel at $(field layout cancel)"
click "$(field layout cancel)"
wait_for 10 "reaction to Cancel (status cancel_clicked)" has_line cancel_clicked
say "$(grep '^status cancel_clicked' "$app_out")"
wait_for 30 "stop (status stopped)" has_line stopped
say "$(grep '^status stopped' "$app_out")"

# 5. A screenshot while the final state is on screen (the app lingers 1.5 s).
sleep 0.3
import -window root "$out/screenshot.png" || fail "screenshot failed"
colours=$(convert "$out/screenshot.png" -format '%k' info:)
say "screenshot $out/screenshot.png: $colours colours"
# An unrendered window is one flat colour; the UI with thumbnails has many.
[ "$colours" -ge 64 ] || fail "the screenshot has $colours colours: did the UI render?"
if [ "$save_screenshot" = 1 ]; then
    geometry=$(xdotool getwindowgeometry --shell "$wid")
    eval "$geometry" # WIDTH HEIGHT X Y
    convert "$out/screenshot.png" -crop "${WIDTH}x${HEIGHT}+${X}+${Y}" +repage -resize 75% -colors 128 \
        "$here/screenshot.png"
    say "saved $here/screenshot.png ($(stat -c %s "$here/screenshot.png") bytes)"
fi

# 6. The app exits by itself.
wait_exit() { ! kill -0 "$app_pid" 2>/dev/null; }
t=$SECONDS
until wait_exit; do
    ((SECONDS - t < 20)) || fail "the app did not exit within 20 s of stopping"
    sleep 0.1
done
app_rc=0
wait "$app_pid" || app_rc=$?
app_pid=""
[ "$app_rc" -eq 0 ] || fail "the app exited with status $app_rc"
has_line exiting || fail "no 'status exiting' line"

# 7. The status lines say the cancel was real.
done_n=$(field stopped done)
failed_n=$(field stopped failed)
cancelled_n=$(field stopped cancelled)
after=$(field stopped started_after_cancel)
[ "$(field stopped total)" = "$total" ] || fail "stopped total $(field stopped total) != started total $total"
[ $((done_n + failed_n + cancelled_n)) -eq "$total" ] ||
    fail "done $done_n + failed $failed_n + cancelled $cancelled_n != total $total"
[ "$cancelled_n" -gt 0 ] || fail "nothing was cancelled"
[ "$done_n" -ge 40 ] || fail "only $done_n done"
# Tasks start oldest first: img-0037 (truncated on purpose) was among them.
[ "$failed_n" -ge 1 ] || fail "the failure of img-0037 was not reported"
[ "$after" = 0 ] || fail "$after task(s) started after the cancel"
# The order of events: started, cancel_clicked, stopped, exiting.
order=$(grep -o '^status \(started\|cancel_clicked\|stopped\|exiting\)\b' "$app_out" | cut -d' ' -f2 | tr '\n' ' ')
[ "$order" = "started cancel_clicked stopped exiting " ] || fail "unexpected order of events: $order"

say "ok: $done_n done, $failed_n failed, $cancelled_n cancelled of $total; stopped $(field stopped stop_ms) ms after Cancel; none started after it"
