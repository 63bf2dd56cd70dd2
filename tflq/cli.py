"""The `tflq` command line: the only module that knows about exit codes and terminals.

Exit codes: 0 success; 1 the input or options cannot be converted (a TflqError: the message names
the file, node or tensor); 2 usage error; 3 internal error (a bug: please report it, --debug shows
the traceback); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): nothing is written then.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import sys
import traceback
import warnings
from contextlib import contextmanager

import click
import numpy as np

from tflq import __version__
from tflq.config import (IO_DTYPES, QUANT_DTYPES, CalibEngine, CalibMethod, ConvertConfig, Mode, dtype_name,
                         parse_input_shape)
from tflq.errors import TflqError
from tflq.text import printable

EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 3, 130, 143
EPILOG = ("Exit codes: 0 success, 1 conversion error (message names the node or file), "
          "2 usage error, 3 internal error (please report; --debug shows the traceback), "
          "130 interrupted (Ctrl-C), 143 terminated (SIGTERM); nothing is written then.")


def _start_calibration_workers(config: ConvertConfig) -> None:
    """Before the converter's imports (about a second): calibration's workers import beside them."""
    from tflq.calibration.parallel import start_workers_for

    start_workers_for(config)


def _choices(enum) -> click.Choice:
    return click.Choice([m.value for m in enum])


def _fail(exc: BaseException, debug: bool) -> None:
    if isinstance(exc, TflqError):
        click.echo(f"Error: {printable(exc.message)}", err=True)
        for d in exc.diagnostics:
            click.echo(f"  - {printable(str(d))}", err=True)
        if debug:
            traceback.print_exc()
        sys.exit(EXIT_ERROR)
    if isinstance(exc, MemoryError):
        click.echo("Error: out of memory; the model or its data need more than this machine has "
                   "(--max-tensor-bytes refuses large tensors before allocating them)", err=True)
        if debug:
            traceback.print_exc()
        sys.exit(EXIT_ERROR)
    click.echo(f"Internal error: {type(exc).__name__}: {printable(str(exc))}. This is a bug in tflq "
               f"{__version__}; please report it with the command you ran (add --debug for the "
               f"traceback).", err=True)
    if debug:
        traceback.print_exc()
    sys.exit(EXIT_INTERNAL)


class _Terminated(BaseException):
    """SIGTERM (kill, timeout, a CI job cancelled) raised in the main thread, so that the way out
    runs as for Ctrl-C: calibration's workers are ended, a temporary file is removed."""


def _terminate(signum, frame):
    raise _Terminated()


@contextmanager
def _terminate_raises():
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: SIGTERM keeps its disposition
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _error_boundary(debug: bool):
    """The CLI boundary of every command: a TflqError (or MemoryError) becomes one line and exit 1,
    anything else an internal error (exit 3); --debug adds the traceback. Warnings go to the log.
    Ctrl-C exits 130 and SIGTERM 143, after calibration's workers are ended; nothing is written."""
    try:
        with _terminate_raises(), _warnings_logged():
            yield
    except click.ClickException:
        raise
    except (KeyboardInterrupt, _Terminated) as exc:
        terminated = isinstance(exc, _Terminated)
        click.echo(f"{'Terminated' if terminated else 'Interrupted'}; nothing was written", err=True)
        if debug:
            traceback.print_exc()
        sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary turns every failure into an exit code
        _fail(exc, debug)


@contextmanager
def _warnings_logged():
    """Python and numpy warnings go to the debug log, never raw to the terminal: tflq reports what
    matters (NaN or Inf produced, a value out of range) as errors naming the node or file."""
    log = logging.getLogger("tflq")

    def show(message, category, filename, lineno, file=None, line=None):
        log.debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)

    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


class _PrintableFormatter(logging.Formatter):
    """Log lines carry names from models and paths: control characters are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _setup_logging(quiet: bool, verbose: bool, debug: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for text in values:
        try:
            name, shape = parse_input_shape(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--input-shape") from None
        shapes[name] = shape
    return shapes


class Number(click.FloatRange):
    """A float option that refuses NaN (which every range comparison lets through) and, unless
    `infinite` allows it, the infinities: `--target-sqnr nan` is a usage error, not a target."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, infinite: bool = False):
        super().__init__(min, max)
        self.infinite = infinite

    def _describe_range(self) -> str:
        # click describes a range with neither bound as "x<=None"; --help shows nothing for it
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if math.isnan(value) or (math.isinf(value) and not self.infinite):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return value


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"'{text}' is not a comma-separated list of finite numbers",
                                 param_hint=option) from None
    return values


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tflq")
def main() -> None:
    """Convert float ONNX models to compact, quantized TensorFlow Lite files.

    \b
    Examples:
      tflq convert model.onnx -o model.tflite
      tflq convert model.onnx -o model_w8.tflite --mode weights-only --dtype int8
      tflq convert model.onnx -o model_int8.tflite --mode full --dtype int8 --calib data/
      tflq eval model.onnx model_int8.tflite --data eval/ --min-sqnr 30 --html report.html
      tflq inspect model.tflite
      tflq ops
    """


_JOBS_OPTION = click.option(
    "--jobs", type=click.IntRange(min=1), default=None,
    help="CPUs calibration runs on, one thread each (threads of this process with onnxruntime, worker "
         "processes with the numpy engine); the result is the same for any number. "
         "[default: the CPUs this process may use]")

_ENGINE_OPTION = click.option(
    "--calib-engine", "calib_engine", type=_choices(CalibEngine), default="auto", show_default=True,
    help="What runs the float graph over the calibration samples: onnxruntime (fast; each tensor "
         "tflq records is read from the ONNX tensor with its values, or computed by tflq's kernels "
         "where it has none) or numpy (tflq's reference interpreter). auto: onnxruntime when it is "
         "installed. Models onnxruntime cannot stand in for fall back to numpy (-v says why).")


def _target_option(help_text: str, default: str | None):
    from tflq.targets import TARGETS

    if default is None:  # (click >= 8.3 counts default=None as a default: required never fired)
        return click.option("--target", type=click.Choice(list(TARGETS)), required=True, help=help_text)
    return click.option("--target", type=click.Choice(list(TARGETS)), default=default,
                        show_default=True, help=help_text)


_TARGETS_HELP = ("litert: LiteRT's builtin kernels. xnnpack: LiteRT with XNNPACK, its default CPU "
                 "delegate (ops it runs in float only stay float; scales kept inside its limits). "
                 "tflm: TFLite Micro (int8 kernels only; an op without one is an error naming the "
                 "node). There is no Edge TPU profile: its compiler is not available here.")
_TARGET_OPTION = _target_option("The runtime the file is for. " + _TARGETS_HELP, "litert")


@main.command(epilog=EPILOG)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .tflite file (written atomically; never a partial file).")
@click.option("--mode", type=_choices(Mode), default=None,
              help="float: no quantization. float16: weights stored as float16 behind DEQUANTIZE (half "
                   "the size, float compute). weights-only: 8-bit weights, float compute. "
                   "full: 8-bit weights and activations (needs --calib or --stats, "
                   "or a model with QuantizeLinear/DequantizeLinear).  [default: float; full for "
                   "a model with QuantizeLinear/DequantizeLinear, using its own parameters; weights-only for "
                   "one that quantizes only its weights, keeping their integers]")
@click.option("--dtype", type=click.Choice([dtype_name(d) for d in QUANT_DTYPES]), default="uint8", show_default=True,
              help="uint8: the classic asymmetric per-tensor scheme. int8: today's TFLite spec "
                   "(symmetric per-channel weights). int16x8: int16 activations (symmetric) with "
                   "int8 weights, for ops LiteRT has 16x8 kernels for. A QDQ model's own types "
                   "decide unless int8 is asked for.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...",
              help="Fix an input's dynamic dimensions, e.g. input:1,3,224,224 (repeatable). "
                   "A dynamic batch defaults to 1.")
@click.option("--keep-io-layout", is_flag=True,
              help="Keep the ONNX layout (NCHW; NCW for 1-D conv inputs and outputs) instead of "
                   "NHWC (NWC).")
@click.option("--min-weight-elements", type=click.IntRange(min=1), default=1024, show_default=True,
              help="weights-only: constants smaller than this stay float (not the ones a QDQ model "
                   "stores in integers: their integers are kept).")
@click.option("--calib", type=click.Path(exists=True),
              help="Calibration data: a directory of .npy/.npz files (or per-input subdirectories), "
                   "or of images; or one .npy/.npz file.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=None,
              help="Use at most this many calibration samples [default: all, up to 500].")
@click.option("--calib-convert", is_flag=True,
              help="Cast calibration arrays of another float width (float64, float16) or a narrower "
                   "integer type to the input's type [default: the types must match].")
@click.option("--calib-method", type=_choices(CalibMethod), default="minmax", show_default=True,
              help="How a tensor's range is estimated: minmax (exact extremes), percentile (drops "
                   "outlier tails), mse (least quantization error), entropy (TensorRT's KL rule; "
                   "clips hardest, keeps top-1 but lowers output SQNR).")
@click.option("--percentile", type=Number(50, 100), default=99.99, show_default=True,
              help="With --calib-method percentile: the share of values (in %) kept inside the range.")
@click.option("--stats", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Reuse calibration statistics saved with --save-stats (repeatable; merged).")
@click.option("--save-stats", type=click.Path(dir_okay=False),
              help="Write the calibration statistics to this file.")
@click.option("--io-type", type=click.Choice(["float"] + [d.name.lower() for d in IO_DTYPES]), default="float", show_default=True,
              help="full mode: type of the model's inputs and outputs.")
@click.option("--float-ops", default="", metavar="NAME[,NAME...]",
              help="full mode: ONNX node names to keep in float (an If or Loop: all its ops).")
@click.option("--int16-ops", default="", metavar="NAME[,NAME...]",
              help="full mode: ONNX node names to run with int16 activations (int8 weights; an If or "
                   "Loop: all its ops).")
@click.option("--target-sqnr", type=Number(), default=None, metavar="DB",
              help="full mode: promote the fewest layers int8 -> int16 -> float until the output "
                   "SQNR of every sample (of --eval-data, else the first calibration samples) "
                   "reaches DB. With --calib, free repairs come first: each 8-bit activation "
                   "grid's range is chosen by the output noise it causes on calibration samples, "
                   "and bias correction (unless said) is kept where it spares promotions; the "
                   "summary names both and the promoted layers.")
@click.option("--eval-data", type=click.Path(exists=True), default=None,
              help="With --target-sqnr: samples to measure the SQNR on, read like --calib "
                   "(the first 8 are used).")
@click.option("--accept-below-target", is_flag=True,
              help="With --target-sqnr: when even every layer promoted falls short of it, write "
                   "that model anyway (exit 0, with a warning saying by how much) instead of "
                   "exit 1 and no file.")
@click.option("--equalize/--no-equalize", default=None,
              help="Cross-layer equalization before quantizing: rescale conv/depthwise/FC pairs "
                   "joined by ReLU-like activations so their per-channel weight ranges match (the "
                   "float model is unchanged). [default: on for uint8 full calibrated with "
                   "--calib, unless statistics are saved or given: per-tensor weights lose a "
                   "trained depthwise layer's small channels (digits MobileNet top-1 10% -> 98% = "
                   "float; other models measured -0.4 to +1.4 dB); off for int8: per-channel "
                   "weights need no equalizing, and the output SQNR moved -0.9 to +1.3 dB; see "
                   "make bench]")
@click.option("--bias-correction/--no-bias-correction", default=None,
              help="Take the mean output shift that rounding each layer's weights causes out of "
                   "its bias: measured on --calib samples (empirical), else (weights-only mode, "
                   "--stats) from the BatchNorm statistics before each layer (analytic; the "
                   "summary names the layers without them). [default: on for int16x8 with "
                   "--calib (ResNet-18 +5.0 dB output SQNR, worst sample too; the random MobileNetV2 +0.8); "
                   "off for uint8 and int8: +0.1 to +2.8 dB output SQNR on the models measured, "
                   "but the worst sample lost up to 4 dB on one, and measuring on --calib samples "
                   "made MobileNetV2's and ResNet-18's conversions 2-5x slower; with --target-sqnr "
                   "and --calib, the search runs with and without it and keeps the one that "
                   "promotes fewer ops]")
@click.option("--rounding", type=click.Choice(["nearest", "adaround"]), default=None,
              help="full mode: adaround learns each weight's rounding (up or down) so that the "
                   "layer's output on --calib data stays the float one, for the layers nearest "
                   "rounding hurts most. [default: adaround for int16x8 with --calib, on the "
                   "worst layers that a fixed amount of work allows (the digits CNN +2.2 dB, "
                   "worst sample +2.6); nearest for uint8 and int8: adaround gained 0 to +1.3 "
                   "dB output SQNR on the models measured, for up to --rounding-seconds]")
@click.option("--rounding-layers", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --rounding adaround: how many of the worst layers to round.")
@click.option("--rounding-seconds", type=Number(min=0, infinite=True), default=30.0, show_default=True,
              help="With --rounding adaround: the time the fitting may take in all (after "
                   "measuring the layers' inputs on 16 calibration samples).")
@click.option("--mean", default=None, metavar="M[,M,M]",
              help="Images: per-channel mean (RGB order) in x = (pixel * scale - mean) / std.")
@click.option("--std", default=None, metavar="S[,S,S]",
              help="Images: per-channel std (RGB order) in x = (pixel * scale - mean) / std.")
@click.option("--scale", type=Number(), default=None,
              help="Images: factor applied to pixel values 0..255 first (e.g. 0.00392 for 0..1).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also write the summary as JSON to this file ('-' for stdout).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write the per-layer error report of the converted file, on the calibration "
                   "samples, to this HTML file (as tflq eval --html; needs pip install 'tflq[report]').")
@click.option("--max-tensor-bytes", type=click.IntRange(min=1), default=2 * 1024 ** 3, show_default=True,
              help="Refuse models with a tensor (stored, folded or computed) larger than this.")
@_JOBS_OPTION
@_ENGINE_OPTION
@_TARGET_OPTION
@click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Log each step.")
@click.option("--debug", is_flag=True, help="Show tracebacks and verify the graph after every pass.")
def convert(model, output, mode, dtype, input_shapes, keep_io_layout, min_weight_elements, calib,
            calib_samples, calib_convert, calib_method, percentile, stats, save_stats, io_type, float_ops, int16_ops,
            target_sqnr, eval_data, accept_below_target, mean, std, scale, report_path, html_path, max_tensor_bytes, jobs, target,
            quiet, verbose, debug, **repairs) -> None:
    """Convert an ONNX MODEL to a TFLite file.

    \b
    Examples:
      tflq convert resnet.onnx -o resnet.tflite
      tflq convert net.onnx -o net.tflite --input-shape input:1,3,224,224
      tflq convert net.onnx -o net_w8.tflite --mode weights-only --dtype int8
      tflq convert net.onnx -o net_q.tflite --mode full --dtype int8 --calib calib/
    """
    _setup_logging(quiet, verbose, debug)
    if debug:
        import os

        os.environ["TFLQ_DEBUG"] = "1"
    with _error_boundary(debug):
        config = ConvertConfig(
            model=model, output=output, mode=Mode(mode) if mode else None,
            dtype=dtype,
            input_shapes=_input_shapes(input_shapes), keep_io_layout=keep_io_layout,
            min_weight_elements=min_weight_elements, calib=calib, calib_samples=calib_samples,
            calib_convert=calib_convert,
            calib_method=CalibMethod(calib_method), percentile=percentile, stats=stats,
            save_stats=save_stats, io_type=io_type,
            float_ops=tuple(n for n in float_ops.split(",") if n),
            int16_ops=tuple(n for n in int16_ops.split(",") if n), target_sqnr=target_sqnr,
            eval_data=eval_data, accept_below_target=accept_below_target,
            mean=_floats(mean, "--mean"), std=_floats(std, "--std"), scale=scale,
            report=report_path if report_path != "-" else None, html=html_path,
            max_tensor_bytes=max_tensor_bytes,
            show_progress=not quiet, jobs=jobs, target=target,
            **repairs)  # equalize, bias_correction, rounding*
        _start_calibration_workers(config)
        from tflq.pipeline import convert as run

        report = run(config)
    if not quiet:
        click.echo(report.to_text(), err=True)
    elif report.precision is not None and not report.precision.reached:
        click.echo(f"Warning: {report.precision.shortfall}; written anyway (--accept-below-target)",
                   err=True)
    if report_path == "-":
        click.echo(report.to_json())


@main.command(epilog=EPILOG)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--calib", required=True, type=click.Path(exists=True),
              help="This shard's calibration data (as for convert --calib).")
@click.option("--save-stats", required=True, type=click.Path(dir_okay=False),
              help="Where to write the statistics (for convert --stats, which merges several).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=None,
              help="Use at most this many calibration samples [default: all, up to 500].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...",
              help="As for convert (the statistics are for the graph these options make).")
@click.option("--keep-io-layout", is_flag=True, help="As for convert.")
@click.option("--equalize", is_flag=True,
              help="Statistics of the cross-layer equalized graph (for convert --stats --equalize).")
@click.option("--mean", default=None, metavar="M[,M,M]", help="Images: as for convert.")
@click.option("--std", default=None, metavar="S[,S,S]", help="Images: as for convert.")
@click.option("--scale", type=Number(), default=None, help="Images: as for convert.")
@_JOBS_OPTION
@_ENGINE_OPTION
@click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Log each step.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def calibrate(model, calib, save_stats, calib_samples, input_shapes, keep_io_layout, equalize, mean, std,
              scale, jobs, calib_engine, quiet, verbose, debug) -> None:
    """Calibrate an ONNX MODEL on one shard of data and save the statistics, for a job array.

    Statistics merge exactly: `convert --stats` over the shards' files gives the same file as
    one calibration over all their samples.

    \b
    Example (one job per shard, then one merge):
      tflq calibrate net.onnx --calib shard_07/ --save-stats stats_07.npz
      tflq convert net.onnx -o net_int8.tflite --mode full --dtype int8 \\
          --stats stats_00.npz --stats stats_01.npz ...
    """
    _setup_logging(quiet, verbose, debug)
    with _error_boundary(debug):
        config = ConvertConfig(
            model=model, mode=Mode.FULL, input_shapes=_input_shapes(input_shapes),
            keep_io_layout=keep_io_layout, calib=calib, calib_samples=calib_samples,
            save_stats=save_stats, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
            scale=scale, show_progress=not quiet, jobs=jobs, equalize=equalize, calib_engine=calib_engine)
        _start_calibration_workers(config)
        from tflq.pipeline import calibrate_only

        report = calibrate_only(config)
    if not quiet:
        calibration = report.calibration or {}
        click.echo(f"{save_stats}: statistics of {calibration.get('samples', 0)} sample(s) "
                   f"in {calibration.get('seconds', 0.0):.1f} s", err=True)


@main.command("eval", epilog=EPILOG)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("tflite", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True),
              help="Evaluation samples, in any form --calib takes (.npy/.npz files or folders, images).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="Class labels, one integer per row: .npy, .npz (array 'labels') or text.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Use at most this many samples [default: all, up to 500].")
@click.option("--min-sqnr", type=Number(), default=None, metavar="DB",
              help="Exit 1 when an output's worst-sample SQNR is below DB.")
@click.option("--min-agreement", type=Number(0, 1), default=None, metavar="P",
              help="Exit 1 when a classifier output's top-1 agreement is below P (0..1).")
@click.option("--layers", is_flag=True,
              help="Also rank the layers by the output error each adds alone (text table).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Write the per-layer report (plots embedded) to this HTML file; needs "
                   "pip install 'tflq[report]'.")
@click.option("--layer-samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Samples the per-layer analysis runs on (and the float fallback check).")
@click.option("--sensitivity-samples", type=click.IntRange(min=1), default=None,
              help="Of those, the samples each layer's sensitivity is measured on (one simulated "
                   "run per layer and sample) [default: all].")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (stable shape).")
@click.option("--float-runtime", type=click.Choice(["auto", "onnxruntime", "tflq"]), default="auto",
              show_default=True, help="The float side: onnxruntime (auto: when installed) or "
                                      "tflq's reference interpreter.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...",
              help="As for convert (the shapes the .tflite was converted with).")
@click.option("--keep-io-layout", is_flag=True, help="As for convert.")
@click.option("--data-convert", is_flag=True, help="Cast data of another numeric type (as --calib-convert).")
@click.option("--mean", default=None, metavar="M[,M,M]", help="Images: as for convert.")
@click.option("--std", default=None, metavar="S[,S,S]", help="Images: as for convert.")
@click.option("--scale", type=Number(), default=None, help="Images: as for convert.")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Log each step.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def eval_command(model, tflite, data, labels, samples, min_sqnr, min_agreement, layers, html_path,
                 layer_samples, sensitivity_samples, as_json, float_runtime, input_shapes, keep_io_layout, data_convert,
                 mean, std, scale, quiet, verbose, debug) -> None:
    """Measure a TFLITE file against its float ONNX MODEL on the same samples: per output SQNR
    (mean and worst sample), cosine similarity, max |error|, top-1 agreement and accuracy;
    --layers/--html add the per-layer analysis. Exit 1 when a --min-* gate is not met.

    \b
    Examples:
      tflq eval net.onnx net_int8.tflite --data eval/ --labels eval/labels.npy
      tflq eval net.onnx net_int8.tflite --data eval/ --min-sqnr 30 --min-agreement 0.99
      tflq eval net.onnx net_int8.tflite --data eval/ --layers --html report.html
    """
    _setup_logging(quiet, verbose, debug)
    with _error_boundary(debug):
        from tflq.analysis.evaluate import evaluate
        from tflq.fileio import Source, WritePolicy

        sources = [Source("the input model", model), Source("the .tflite file", tflite),
                   Source("the evaluation data", data)]
        if labels:
            sources.append(Source("the labels", labels))
        policy = WritePolicy({"--html": html_path}, sources)
        policy.check()
        if html_path:
            from tflq.analysis.plots import require_matplotlib

            require_matplotlib()
        result = evaluate(model, tflite, data, labels, samples=samples,
                          input_shapes=_input_shapes(input_shapes), keep_io_layout=keep_io_layout,
                          mean=_floats(mean, "--mean"), std=_floats(std, "--std"), scale=scale,
                          data_convert=data_convert, float_runtime=float_runtime,
                          min_sqnr=min_sqnr, min_agreement=min_agreement,
                          layers=layers or bool(html_path), layer_samples=layer_samples,
                          sensitivity_samples=sensitivity_samples, report_path=html_path)
        if html_path:
            from tflq.analysis.html_report import render_html

            policy.write("--html", render_html(result))
    if as_json:
        click.echo(result.to_json())
    elif not quiet:
        click.echo(result.to_text())
        if layers and result.layers is not None:
            click.echo(result.layers.to_text())
    for check in result.failures:
        click.echo(f"Error: {check.message()}", err=True)
    if result.failures:
        sys.exit(EXIT_ERROR)


@main.command(epilog=EPILOG)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def inspect(file, as_json, debug) -> None:
    """Show a .tflite FILE's ops, tensors (dtype, shape, quantization) and buffer sizes, for every
    subgraph (control-flow bodies and other signatures' graphs after the main one).

    \b
    Example:
      tflq inspect model.tflite --json | jq '.ops[].kind'
    """
    from tflq.backend.tflite_reader import format_model, read_subgraphs_file

    with _error_boundary(debug):
        info, *others = read_subgraphs_file(file)
        if as_json:
            listing = info.to_dict()
            if others:
                listing["other_subgraphs"] = [{"subgraph": o.subgraph, **o.to_dict()} for o in others]
            text = json.dumps(listing, indent=2)
        else:
            text = format_model(info, others)
    click.echo(text)


@main.command(epilog="Exit codes: 0 no violation, 1 a violation (or FILE is no TFLite file), "
                     "2 usage error, 3 internal error.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_target_option("The runtime to check against. " + _TARGETS_HELP, None)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def check(file, target, as_json, debug) -> None:
    """List every way a .tflite FILE (any converter's) breaks a target's profile: missing kernels
    or versions, tensor types, fixed output grids (SOFTMAX, LOGISTIC, TANH), same-scale rules
    (pooling, RESHAPE, int8 CONCATENATION), scale-ratio limits, dynamic tensors. Notes (not
    violations) name the ops a delegate leaves to LiteRT's builtin kernels.

    \b
    Example (a CI gate):
      tflq check model_int8.tflite --target tflm
    """
    from tflq.checker import check_file
    from tflq.targets import get_target

    with _error_boundary(debug):
        result = check_file(file, get_target(target))
    click.echo(result.to_json() if as_json else result.to_text())
    if result.violations:
        sys.exit(EXIT_ERROR)


@main.command(epilog=EPILOG)
@click.option("--markdown", is_flag=True, help="Print a Markdown table (used for the README).")
def ops(markdown) -> None:
    """List the ONNX ops tflq converts, the TFLite ops they become, and how each quantizes.

    \b
    Example:
      tflq ops
    """
    from tflq.support_table import support_table

    click.echo(support_table(markdown=markdown))


if __name__ == "__main__":
    main()
