"""Table 3 of the paper: σ unknown to the adaptation.

Same grid as Table 2 with blind networks only; the adaptation either draws σ uniformly from [0, 50]
(the paper's choice, ``--sigma-mode uniform``) or uses the σ estimated from the noisy image
(``--sigma-mode estimate``, rfr-deploy's default for unknown noise).

    python benchmarks/table3_unknown_sigma.py --sigma-mode estimate --datasets CBSD68 --sigmas 25 --limit 10
"""

from __future__ import annotations

import table2_known_sigma


def main() -> None:
    table2_known_sigma.main(
        description=__doc__,
        sigma_modes=("estimate", "uniform"),
        name="table3_unknown_sigma_{mode}",
        title="Table 3: unknown σ ({mode})",
        networks="CDnCNN-B,DnCNN-B",
    )


if __name__ == "__main__":
    main()
