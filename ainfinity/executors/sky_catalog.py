"""SkyPilot's own checks and catalog, used without a SkyPilot API server.

`validate_task` runs a rendered task through SkyPilot's parser and validators; `estimate_cost`
prices a job's resources from SkyPilot's catalog of instance types. Both read local files
only: the catalog CSVs under `$SKY_RUNTIME_DIR/.sky/catalogs` (SkyPilot downloads one the
first time it is needed, then refreshes it every few hours). `sky` is imported on first use:
it takes a second or more, and a server that never sees a SkyPilot job never pays it.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from typing import Any

from ainfinity.exceptions import CatalogUnavailable, InvalidSpec
from ainfinity.schema.estimate import CostEstimate, Offer
from ainfinity.schema.job import Resources

# The clouds an estimate searches when the job names none: the ones with public price lists
# SkyPilot has most offers for. A job pinned to another cloud (`resources.cloud`) searches that.
DEFAULT_ESTIMATE_CLOUDS = ("aws", "azure", "gcp")
# SkyPilot has no price list for clusters it does not rent.
_UNPRICED_CLOUDS = frozenset({"kubernetes", "ssh", "slurm"})
MAX_ALTERNATIVES = 4
_MAX_MESSAGE = 1000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def validate_task(task: dict[str, Any]) -> None:
    """Raise InvalidSpec (422) with SkyPilot's reason when SkyPilot would refuse `task`.

    Runs `sky.Task.from_yaml_config` and `Task.validate`, then the bucket-source checks
    SkyPilot's API server only makes when the job launches. The workdir is not checked: the
    store writes it after this. `task` itself is left as it was.
    """
    resources = task.get("resources")
    if isinstance(resources, dict) and resources.get("region") and not resources.get("cloud"):
        # SkyPilot would look for the region in every cloud enabled on its API server,
        # which is not known here; a region belongs to one cloud anyway.
        raise InvalidSpec("resources.region needs resources.cloud (a region names one cloud's).")
    import sky
    from sky import exceptions as sky_exceptions

    try:
        parsed = sky.Task.from_yaml_config(copy.deepcopy(task))
        parsed.validate(skip_workdir=True)
        _check_bucket_sources(parsed)
    except (ValueError, sky_exceptions.StorageError, sky_exceptions.NotSupportedError) as exc:
        raise InvalidSpec(f"SkyPilot rejects the task: {plain_error(exc)}") from None


def _check_bucket_sources(task: Any) -> None:
    """SkyPilot's own source check (scheme; MOUNT takes a whole bucket), ahead of launch."""
    from sky.data import data_utils
    from sky.data import storage as storage_lib

    # Private, but it is exactly the check the API server runs when it builds the storage.
    check = storage_lib.Storage._validate_source
    for storage in (task.storage_mounts or {}).values():
        if isinstance(storage.source, str):
            check(storage.source, storage.mode, True)
    for source in (task.file_mounts or {}).values():
        if data_utils.is_cloud_store_url(source):
            check(source, storage_lib.StorageMode.COPY, True)


def estimate_cost(
    requested: Resources, *, clouds: Sequence[str] = DEFAULT_ESTIMATE_CLOUDS
) -> CostEstimate:
    """The cheapest way to run these resources per hour, from SkyPilot's catalog.

    Honours `accelerators`, `cloud` (else `clouds` are searched), `region`, `use_spot` and
    `num_nodes`. Raises InvalidSpec when nothing in the catalog matches.
    """
    if requested.accelerators is None:
        raise InvalidSpec(
            "A cost estimate needs resources.accelerators, e.g. 'A100:8' "
            "(SkyPilot picks CPU-only instances when the job launches)."
        )
    name, count = _parse_accelerators(requested.accelerators)
    searched = _clouds_to_search(requested.cloud, clouds)
    from sky import catalog

    def offered(quantity: int | None) -> list[Any]:
        # One cloud at a time: under pandas 3 a cloud whose filters leave no row raises
        # (below), and that must not hide the other clouds' offers.
        return [info for cloud in searched for info in offered_by(cloud, quantity)]

    def offered_by(cloud: str, quantity: int | None) -> list[Any]:
        try:
            found = catalog.list_accelerators(
                gpus_only=False,
                name_filter=_exactly(name),
                region_filter=_exactly(requested.region) if requested.region else None,
                quantity_filter=quantity,
                clouds=[cloud],
                case_sensitive=False,
                all_regions=True,
            )
        except OSError as exc:
            # The catalog is fetched (and refreshed) from SkyPilot's catalog repository.
            raise CatalogUnavailable(
                f"SkyPilot's price catalog cannot be read: {plain_error(exc)}"
            ) from None
        except TypeError:
            # SkyPilot under pandas 3 (string columns): when the filters leave no row, the
            # empty GPU-memory column keeps its string dtype and dividing it raises. Nothing
            # matched.
            return []
        return [info for infos in found.values() for info in infos]

    offers = []
    for info in offered(count):
        price = info.spot_price if requested.use_spot else info.price
        if price is None or math.isnan(price):
            continue  # no spot (or on-demand) price for this instance type there
        offers.append(
            Offer(
                cloud=info.cloud.lower(),
                region=info.region,
                instance_type=info.instance_type,
                accelerators=f"{info.accelerator_name}:{count}",
                use_spot=requested.use_spot,
                hourly_price_per_node=round(price, 5),
                hourly_price_total=round(price * requested.num_nodes, 5),
            )
        )
    if not offers:
        raise InvalidSpec(_no_offer(name, count, requested, searched, offered(None)))
    offers.sort(key=lambda o: (o.hourly_price_per_node, o.cloud, o.region, o.instance_type or ""))
    best: dict[tuple[str, str | None], Offer] = {}
    for offer in offers:
        best.setdefault((offer.cloud, offer.instance_type), offer)
    cheapest, *others = best.values()
    return CostEstimate(
        accelerators=cheapest.accelerators,
        num_nodes=requested.num_nodes,
        use_spot=requested.use_spot,
        clouds=searched,
        cheapest=cheapest,
        alternatives=others[:MAX_ALTERNATIVES],
    )


def _parse_accelerators(accelerators: str) -> tuple[str, int]:
    name, _, count = accelerators.partition(":")
    if count and not count.isdigit():
        raise InvalidSpec(f"resources.accelerators {accelerators!r} is not NAME or NAME:COUNT.")
    return name, int(count or 1)


def _clouds_to_search(cloud: str | None, default: Sequence[str]) -> list[str]:
    from sky.utils import registry

    searched = [cloud] if cloud is not None else [c.lower() for c in default]
    for name in searched:
        try:
            registry.CLOUD_REGISTRY.from_str(name)
        except ValueError:
            raise InvalidSpec(f"SkyPilot knows no cloud named {name!r}.") from None
        if name in _UNPRICED_CLOUDS:
            raise InvalidSpec(f"SkyPilot has no price list for {name}; name a public cloud.")
    return searched


def _exactly(text: str) -> str:
    """A catalog filter (a regex SkyPilot searches with) matching `text` and nothing longer."""
    return f"^{re.escape(text)}$"


def _no_offer(
    name: str, count: int, requested: Resources, searched: list[str], any_count: list[Any]
) -> str:
    where = f"{', '.join(searched)}" + (f" (region {requested.region})" if requested.region else "")
    if not any_count:
        return f"SkyPilot's catalog has no accelerator {name!r} in {where}."
    counts = sorted({int(info.accelerator_count) for info in any_count})
    if count not in counts:
        shown = ", ".join(str(c) for c in counts)
        return f"{name} comes {shown} to a node in {where}, not {count}."
    kind = "spot" if requested.use_spot else "on-demand"
    return f"SkyPilot's catalog has no {kind} price for {name}:{count} in {where}."


def plain_error(exc: BaseException) -> str:
    """SkyPilot's message on one line, without terminal colours, of a readable length."""
    text = " ".join(_ANSI.sub("", str(exc)).split()) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
