"""One module per dashboard page; each exposes ``render(ctx: dashboard.state.Ctx)``."""
