"""Helpers the tests of the builtin components share (``tests`` is on pytest's
``pythonpath``): a call context, a call expected to fail, a chat conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pocketbatch._errors import ComponentError
from pocketbatch.loader._component import CallContext, Component, LoaderOptions


def make_ctx(
    flow_dir: Path | None = None,
    variables: dict[str, Any] | None = None,
    **options: Any,
) -> CallContext:
    return CallContext(
        step_id="step",
        flow_dir=flow_dir,
        variables=variables or {},
        options=LoaderOptions(**options),
    )


async def fails(component: Component, input: Any, ctx: CallContext | None = None) -> ComponentError:
    with pytest.raises(ComponentError) as info:
        await component(input, ctx or make_ctx())
    return info.value


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
