"""``rfr-deploy adapt-and-export``: the main job.

Its options are generated from the settings dataclasses they set: :class:`~rfr_deploy.jobs.settings.JobSettings`,
:class:`~rfr_deploy.adaptation.config.AdaptConfig` and the settings of every registered export format
(:mod:`rfr_deploy.cli.exports`). :func:`build_command` makes the command from the formats registered
when it is called (at import for ``rfr-deploy``).
"""

from __future__ import annotations

from pathlib import Path

import click

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.cli.adapt_options import adapt_config, adapt_options, check_adapt_options
from rfr_deploy.cli.exports import export_options, exporters_from
from rfr_deploy.cli.options import (
    device_option,
    emit_json,
    existing_paths,
    field_options,
    given_options,
    model_options,
    output_options,
    reporter_for,
    settings_from,
)
from rfr_deploy.cli.ray_options import check_ray_options, ray_options, run_on_ray
from rfr_deploy.errors import ConfigError, PartialFailure
from rfr_deploy.jobs.adapt_export import adapt_and_export, plan_adapt_and_export
from rfr_deploy.jobs.reference import sample_paths
from rfr_deploy.jobs.settings import JobSettings

J = JobSettings
NOISE_OPTIONS = (
    "noise",
    "sigma",
    "unknown_sigma",
    "noise_quantization",
    "noise_chroma",
    "noise_jpeg",
    "noise_channels",
    "sigma_low",
    "sigma_high",
)


def _stored_as(record: dict) -> str:
    """What the plan adds to an image's channels: how it is taken where that is not as stored."""
    if "stored_channels" in record:
        return " (grey, stored as RGB)"
    return " (gray network per channel)" if record.get("per_channel") else ""


def run(
    inputs, sample, dry_run, ray_address, cpus_per_image, gpus_per_image, as_json, quiet, **options
) -> None:
    """Adapt the pre-trained network to each of INPUTS (files or folders) and export the result.

    Writes <stem>_rfr.png (adapted output), <stem>_rfr.safetensors (adapted weights), the requested
    exports and <stem>.json, a manifest of every file with its sha256, the settings and the timings.
    """
    if sample:
        if inputs:
            raise click.UsageError("give either INPUTS or --sample, not both")
        noisy, clean = sample_paths()
        inputs, options["reference"] = (str(noisy),), options["reference"] or str(clean)
    elif not inputs:
        raise click.UsageError(
            "give one or more INPUTS (files or folders), or --sample for the bundled demo image"
        )
    check_ray_options(ray_address, cpus_per_image, gpus_per_image, options["threads"])
    given = given_options(click.get_current_context())
    config = adapt_config(options["steps"], options["seed"], options)
    check_options(options, given, config)
    settings = settings_from(JobSettings, options)
    exporters = exporters_from(options, given)
    reporter = reporter_for(quiet, as_json)
    paths = existing_paths(inputs)
    if dry_run:  # with --ray too: its driver skips and plans the same groups
        plan = plan_adapt_and_export(paths, settings, config, reporter=reporter, exporters=exporters)
        if as_json:
            emit_json(plan)
        else:
            click.echo("\n".join(describe_plan_lines(plan)))
        return
    if ray_address is not None:
        run_on_ray(
            paths, settings, config, exporters, ray_address, cpus_per_image, gpus_per_image, reporter, as_json
        )
        return
    try:
        manifests = adapt_and_export(paths, settings, config, reporter=reporter, exporters=exporters)
    except PartialFailure as failure:  # the manifests, and a record for each group that failed
        if as_json:
            emit_json(failure.results)
        raise
    if as_json:
        emit_json(manifests)


def check_options(options: dict, given: dict[str, str], config: AdaptConfig) -> None:
    """Refuse what the run would not follow, before any input is read: an empty output folder name (the
    current folder, unasked), ``--unknown-sigma`` with ``--sigma`` (it is for an unknown level), a σ range
    without ``--unknown-sigma uniform`` (the only levels it bounds), ``--affine-lr`` without affine maps to
    tune, and the adaptation settings
    :func:`~rfr_deploy.cli.adapt_options.check_adapt_options` refuses."""
    if not options["output_dir"]:
        raise ConfigError("-o/--output-dir is empty: name a folder (-o . for the current one)")
    if options["sigma"] is not None and "unknown_sigma" in given:
        raise ConfigError("--unknown-sigma is for a run without --sigma (an unknown level): drop one of them")
    bounds = [given[key] for key in ("sigma_low", "sigma_high") if key in given]
    if bounds and options["unknown_sigma"] != "uniform":
        them = "them" if len(bounds) > 1 else "it"
        known = options["sigma"] is not None
        raise ConfigError(
            f"{'/'.join(bounds)} bound{'' if len(bounds) > 1 else 's'} the random levels of --unknown-sigma "
            "uniform, which this run does not draw: "
            + (
                f"drop {them} (--sigma is a known level)"
                if known
                else f"add --unknown-sigma uniform or drop {them}"
            )
        )
    if "affine_lr" in given and options["tune"] == "all":
        raise ConfigError(
            "--affine-lr is the rate of the affine maps of --tune affine or all+affine: drop it"
        )
    check_adapt_options(config)


def describe_plan_lines(plan: dict) -> list[str]:
    """``--dry-run``'s text: a line per group, then what the run would write and where."""
    lines = []
    for group in plan["groups"]:
        images = group["images"]
        names = [Path(i["path"]).name for i in images]
        shown_names = ", ".join(names[:3] + (["…"] if len(names) > 3 else []))
        label = names[0] if len(names) == 1 else f"set of {len(names)} images ({shown_names})"
        if group["status"] == "done":
            lines.append(f"{label}: done with these settings ({group['manifest']})")
            continue
        if group["status"] == "to export":
            lines.append(f"{label}: adapted with these settings ({group['manifest']}): to export")
            continue
        first, levels = images[0], sorted({i["sigma"] for i in images if i["sigma"] is not None})
        shown = "–".join(f"{v:g}" for v in dict.fromkeys((levels[0], levels[-1]))) if levels else ""
        sigma = f"σ {shown} ({first['sigma_from']})" if shown else ""
        sizes = " / ".join(dict.fromkeys(f"{i['height']}×{i['width']}" for i in images))
        size = f"{sizes}, {first['channels']} channel(s)" + _stored_as(first)
        lines.append(
            ", ".join(p for p in (f"{label}: {size}", sigma, f"{group['noise']} noise: to adapt") if p)
        )
    todo = sum(g["status"] == "to adapt" for g in plan["groups"])
    again = sum(g["status"] == "to export" for g in plan["groups"])
    formats = ", ".join(["image + weights", *plan["formats"]])
    exports = f" and {again} to export again" if again else ""
    lines.append(
        f"dry run: {todo} of {len(plan['groups'])} group(s) to adapt{exports} on {plan['device']}, writing "
        f"{formats} to {plan['output_dir']}; nothing was written"
    )
    return lines


OPTIONS = (
    click.argument("inputs", nargs=-1),
    click.option(
        "--sample", is_flag=True, help="Run on the bundled sample image (scored against its clean reference)."
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Check the inputs, weights, output folder and export settings, print what the run would do, "
        "and stop before adapting (nothing is written).",
    ),
    field_options(J, "reference"),
    model_options,
    field_options(J, "gray_weights"),
    field_options(J, *NOISE_OPTIONS),
    field_options(AdaptConfig, "steps"),
    field_options(J, "output_ensemble"),
    field_options(AdaptConfig, "seed"),
    adapt_options,
    device_option,
    field_options(J, "threads"),
    export_options,
    field_options(J, "per_set", "per_channel", "output_dir"),
    ray_options,
    output_options,
)
"""The command's arguments and options, in the order ``--help`` lists them."""


def build_command() -> click.Command:
    """The click command, with the options of the export formats registered now."""

    def adapt_and_export_command(**kwargs) -> None:
        run(**kwargs)

    adapt_and_export_command.__doc__ = run.__doc__
    f = adapt_and_export_command
    for option in reversed(OPTIONS):
        f = option(f)
    return click.command("adapt-and-export")(f)


command = build_command()
