"""Actions of the bundled sales demo; importing this module registers them.

They use only pandas and a seeded random generator, so the demo is the same
on every machine and needs no network.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dagger_nb import action

REGIONS = ["north", "south", "east", "west"]
PRODUCTS = ["anvil", "rocket skates", "giant magnet", "bird seed", "tornado kit", "spring shoes"]


@action
def extract_orders(rows: int = 200, seed: int = 7) -> pd.DataFrame:
    """Orders with region, product, quantity and unit price; a few rows are deliberately bad."""
    rng = np.random.default_rng(seed)
    orders = pd.DataFrame(
        {
            "order_id": np.arange(1, rows + 1),
            "region": rng.choice(REGIONS, size=rows),
            "product": rng.choice(PRODUCTS, size=rows),
            "quantity": rng.integers(1, 12, size=rows),
            "unit_price": rng.choice([4.5, 9.99, 19.0, 49.5], size=rows),
        }
    )
    orders.loc[orders.sample(frac=0.05, random_state=seed).index, "region"] = None
    orders.loc[orders.sample(frac=0.03, random_state=seed + 1).index, "quantity"] = 0
    return orders


@action
def clean_orders(orders: pd.DataFrame) -> dict[str, object]:
    """Keep the rows that can be counted; report how many were dropped."""
    valid = orders.dropna(subset=["region"])
    valid = valid[valid["quantity"] > 0].copy()
    valid["revenue"] = valid["quantity"] * valid["unit_price"]
    return {"orders": valid, "dropped": len(orders) - len(valid)}


@action
async def revenue_by_region(orders: pd.DataFrame) -> pd.DataFrame:
    """Revenue per region, largest first."""
    table: pd.DataFrame = orders.groupby("region", as_index=False)[["revenue"]].sum()
    return table.sort_values("revenue", ascending=False, ignore_index=True)


@action
async def top_products(orders: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The ``limit`` products sold in the largest quantities."""
    table: pd.DataFrame = orders.groupby("product", as_index=False)[["quantity"]].sum()
    return table.nlargest(limit, "quantity").reset_index(drop=True)


@action
def write_report(regions: pd.DataFrame, products: pd.DataFrame, dropped: int) -> str:
    """A short plain-text report."""
    best = regions.iloc[0]
    lines = [
        f"Best region: {best['region']} ({best['revenue']:.2f} revenue)",
        "Top products: "
        + ", ".join(f"{p} ({q})" for p, q in zip(products["product"], products["quantity"], strict=True)),
        f"Rows dropped while cleaning: {dropped}",
    ]
    return "\n".join(lines)
