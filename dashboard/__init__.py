"""The Streamlit dashboard: layout only.

Every number on every page comes from ``analytics`` or ``nlq`` through the cached calls in
``dashboard.data``; the pages in ``dashboard.views`` only arrange them. Start it with
``meshlens dashboard`` (``meshlens/cli/dashboard_cmds.py``) or
``streamlit run dashboard/app.py -- --data DIR``.
"""
