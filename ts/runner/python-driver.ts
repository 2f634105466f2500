// The Python driver: the program the host starts in the guest with
// `python3 -c` to keep one interpreter alive across runs. Its protocol is in
// ./protocol.ts. Kept as a string (String.raw: no escapes are processed, so
// the source must hold neither a backtick nor a dollar sign before a brace);
// __test__/runner.e2e.test.ts runs it in a VM.

/** Source of the Python driver (Python 3.8 or later, standard library only; run on 3.8 to 3.13). */
export const PYTHON_DRIVER = String.raw`
import ast, base64, builtins, fcntl, importlib.abc, importlib.util, io, json, linecache
import os, select, signal, sys, termios, threading, traceback, types

CHUNK = 256 * 1024
MAX_TEXT = 1024 * 1024
MAX_DATA = 16 * 1024 * 1024
BACKEND = "msb_runner_inline"
DRIVER_FILE = sys._getframe(0).f_code.co_filename  # "<string>" under -c

# Private channels: the requests arrive on what was stdin, replies leave on what
# was stdout. The user's code gets /dev/null as stdin and pipes as fd 1 and 2,
# which the pump thread reads, so that anything written to them (print,
# os.write, a subprocess) is framed and attributed to the run that wrote it.
requests = os.fdopen(os.dup(0), "rb", buffering=65536)
replies = os.dup(1)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
pipes = {}
for stream in (1, 2):
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, 1031, 1024 * 1024)  # F_SETPIPE_SZ: fewer wake-ups under emulation
    except OSError:
        pass
    os.dup2(w, stream)
    os.close(w)
    os.set_blocking(r, False)
    pipes[r] = stream
for f in (sys.stdout, sys.stderr):
    try:
        f.reconfigure(line_buffering=True)
    except Exception:
        pass

# Held to write a frame, and by the pump from reading a chunk to sending it.
reply_lock = threading.RLock()
current = [0]


def send(frame):
    line = (json.dumps(frame, separators=(",", ":")) + "\n").encode()
    with reply_lock:
        view = memoryview(line)
        while view:
            view = view[os.write(replies, view):]


def forward(fd, limit):
    """Reads what fd holds, at most limit bytes, and sends it; returns the count."""
    total = 0
    while total < limit:
        with reply_lock:
            try:
                data = os.read(fd, min(CHUNK, limit - total))
            except BlockingIOError:
                break
            if not data:
                break
            total += len(data)
            send({"t": "out", "id": current[0], "s": pipes[fd], "d": base64.b64encode(data).decode()})
    return total


def pump():
    # SIGINT is for the main thread, which runs the user's code.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    while True:
        ready, _, _ = select.select(list(pipes), [], [])
        for fd in ready:
            forward(fd, CHUNK)


def sync_output():
    """Sends the rest of what the run wrote to fd 1 and 2, before its results and end."""
    for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            f.flush()
        except Exception:
            pass
    # With the lock held the pump holds nothing it has read and not sent: the
    # pipes hold the rest. Exactly that much is forwarded, so that a writer
    # that never stops (a thread, a child) cannot hold the run open.
    with reply_lock:
        for fd in pipes:
            pending = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
            forward(fd, int.from_bytes(pending, sys.byteorder))


results = []


def add_result(kind, mime, data):
    if isinstance(data, bytes):
        if len(data) > MAX_DATA:
            return
        data = base64.b64encode(data).decode()
    elif not isinstance(data, str):
        data = json.dumps(data)
    if len(data) > MAX_DATA:
        return
    results.append({"kind": kind, "mime": mime, "data": data})


REPRS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
)


def add_formats(kind, value):
    figure = sys.modules.get("matplotlib.figure")
    if figure is not None and isinstance(value, figure.Figure):
        add_result(kind, "image/png", figure_png(value))
        return
    for method, mime in REPRS:
        fn = getattr(value, method, None)
        if not callable(fn):
            continue
        try:
            data = fn()
        except Exception:
            continue
        if data is not None:
            add_result(kind, mime, data)


def display(*values):
    """Shows each value as a rich result of the run: a figure as PNG, else its _repr_*_ methods."""
    for value in values:
        before = len(results)
        add_formats("display", value)
        if len(results) == before:
            add_result("display", "text/plain", repr(value)[:MAX_TEXT])


def figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def show_figures(*args, **kwargs):
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return
    for manager in helpers.Gcf.get_all_fig_managers():
        add_result("display", "image/png", figure_png(manager.canvas.figure))
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


class InlineBackend(importlib.abc.Loader):
    """matplotlib's backend here: Agg canvases, and show() makes PNG results."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == BACKEND:
            return importlib.util.spec_from_loader(name, InlineBackend())
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.backend_bases import FigureManagerBase

        module.FigureCanvas = FigureCanvasAgg
        module.FigureManager = FigureManagerBase
        module.show = show_figures


sys.meta_path.append(InlineBackend)
os.environ.setdefault("MPLBACKEND", "module://" + BACKEND)

running = [False]


def on_sigint(signum, frame):
    # The host interrupts only the run in progress; one that comes late is dropped.
    if running[0]:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, on_sigint)

# The user's code runs in a module of its own that is __main__ (as IPython
# does), so that pickle and multiprocessing find what it defines; the driver's
# functions keep their own globals.
main_module = types.ModuleType("__main__")
main_module.__builtins__ = builtins
main_module.display = display
sys.modules["__main__"] = main_module
namespace = main_module.__dict__


def user_traceback(tb):
    while tb is not None and tb.tb_frame.f_code.co_filename == DRIVER_FILE:
        tb = tb.tb_next
    return tb


def describe(error, compiling=False):
    if compiling:
        # Raised by the compiler, not by the code: no frames of its own.
        lines = traceback.format_exception_only(type(error), error)
    else:
        report = traceback.TracebackException(type(error), error, user_traceback(error.__traceback__))
        # The driver's frames (its SIGINT handler, the last one of an interrupt) are not the user's.
        frames = [f for f in report.stack if f.filename != DRIVER_FILE]
        report.stack = traceback.StackSummary.from_list(frames)
        lines = report.format()
    return {
        "name": type(error).__name__,
        "message": str(error)[:MAX_TEXT],
        "traceback": "".join(lines)[-MAX_TEXT:],
    }


def run(request_id, code):
    filename = "<cell %d>" % request_id
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    del results[:]
    exception = None
    value = None
    try:
        tree = ast.parse(code, filename, "exec")
        tail = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            tail = compile(ast.Expression(tree.body.pop().value), filename, "eval")
        body = compile(tree, filename, "exec")
    except BaseException as error:  # SyntaxError, ValueError (a NUL byte), RecursionError
        exception = describe(error, compiling=True)
        body = tail = None
    if body is not None:
        try:
            running[0] = True
            exec(body, namespace)
            if tail is not None:
                value = eval(tail, namespace)
            running[0] = False
        except BaseException as error:
            running[0] = False
            exception = describe(error)
    try:
        if value is not None:
            add_result("value", "text/plain", repr(value)[:MAX_TEXT])
            add_formats("value", value)
        if "matplotlib.pyplot" in sys.modules:
            show_figures()
    except BaseException as error:
        if exception is None:
            exception = describe(error)
    sync_output()
    for result in results:
        send(dict(result, t="result", id=request_id))
    del results[:]
    send({"t": "done", "id": request_id, "exception": exception})


def main():
    threading.Thread(target=pump, daemon=True).start()
    sync_output()
    version = "%d.%d.%d" % sys.version_info[:3]
    send({"t": "ready", "language": "python", "version": version, "pid": os.getpid()})
    while True:
        try:
            line = requests.readline()
            if not line:
                return
            request = json.loads(line)
            current[0] = request["id"]
            run(request["id"], request["code"])
        except KeyboardInterrupt:
            # A late interrupt outside a run: the request it hit is answered, not lost.
            if running[0] is False and current[0]:
                send({"t": "done", "id": current[0], "exception": {"name": "KeyboardInterrupt", "message": "", "traceback": ""}})


main()
`;
