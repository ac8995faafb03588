"""The trajectory types and the families they belong to (one place, so writers, plan, verification
and report agree on what "a type with a differential" or "a switch" is).

* direct: rule -> diagnosis, no differential;
* ddx_keep / ddx_switch: the differential is a DDx neighbour of the truth (from the DDx graph);
* random_ddx_keep / random_ddx_switch: the differential is drawn at random from diseases outside
  the truth's DDx neighbourhood (the paper's "random DDx" types: the model learns to rule out an
  implausible alternative too, not only the textbook's look-alikes).

"keep" types state the truth first and keep it after comparing; "switch" types start from the
differential and switch to the truth.
"""

from __future__ import annotations

BASE_TYPES = ("direct", "ddx_keep", "ddx_switch")
"""The original three types; reports always list them (with 0 when none was written)."""
RANDOM_DDX_TYPES = ("random_ddx_keep", "random_ddx_switch")
"""Types whose differential is drawn outside the DDx graph."""
TRAJECTORY_TYPES = BASE_TYPES + RANDOM_DDX_TYPES
"""Every type, in the order type shares are laid out on [0, 1) (new types last, so adding them
with share 0 leaves every existing assignment unchanged)."""
DDX_TYPES = ("ddx_keep", "ddx_switch")
"""Types whose differential is a DDx neighbour."""
DIFFERENTIAL_TYPES = DDX_TYPES + RANDOM_DDX_TYPES
"""Types that weigh a differential (and must cite one)."""
KEEP_TYPES = ("ddx_keep", "random_ddx_keep")
SWITCH_TYPES = ("ddx_switch", "random_ddx_switch")
