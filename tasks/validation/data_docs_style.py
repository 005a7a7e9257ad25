"""The one stylesheet offline Data Docs load (tasks/validation/data_docs.py writes it into the site): what the GX
pages need from Bootstrap 4 and Font Awesome, which they would otherwise fetch from CDNs. A Python string, not a
.css file, so it ships with the package (package-data covers json/yaml/csv only)."""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       font-size: 15px; line-height: 1.45; color: #212529; margin: 0; background: #fff; }
a { color: #0062cc; text-decoration: none; } a:hover { text-decoration: underline; }
.container-fluid { padding: 0 24px; box-sizing: border-box; width: 100%; }
.row { display: flex; flex-wrap: wrap; margin: 0 -8px; }
.row > * { padding: 0 8px; box-sizing: border-box; }
.col-12, .col-xs-12, .col-sm-12 { flex: 0 0 100%; max-width: 100%; }
.col-md-2, .col-lg-2 { flex: 0 0 18%; max-width: 18%; }
.col-md-10, .col-lg-10 { flex: 0 0 82%; max-width: 82%; }
.col-6, .col-md-6 { flex: 0 0 50%; max-width: 50%; }
.col-4, .col-md-4 { flex: 0 0 33.3%; max-width: 33.3%; }
.col-8, .col-md-8 { flex: 0 0 66.6%; max-width: 66.6%; }
.navbar { display: flex; align-items: center; padding: 8px 24px; border-bottom: 1px solid #dee2e6; }
.navbar-brand img { height: 40px !important; }
.breadcrumb { display: inline-flex; list-style: none; margin: 0 0 0 16px; padding: 0; }
.breadcrumb-item + .breadcrumb-item::before { content: "/"; padding: 0 6px; color: #6c757d; }
.d-none { display: none; } .d-md-block, .d-md-inline-flex, .d-sm-block { display: block; }
.card { border: 1px solid #dee2e6; border-radius: 4px; margin-bottom: 12px; }
.card-header { background: #f7f7f9; padding: 6px 10px; border-bottom: 1px solid #dee2e6; }
.card-body { padding: 10px; }
.alert { padding: 10px 14px; border: 1px solid transparent; border-radius: 4px; margin-bottom: 12px; }
.alert-secondary { background: #e2e3e5; border-color: #d6d8db; }
.alert-info { background: #d1ecf1; border-color: #bee5eb; }
.nav { list-style: none; padding: 0; margin: 0; }
.nav-tabs { display: none; }  /* no tab script offline: both panes are shown, each under its heading */
.tab-pane { display: block; margin-bottom: 28px; }
#Validation-Results::before { content: "Validation results"; font-size: 1.3em; font-weight: 600; }
#Expectation-Suites::before { content: "Expectation suites"; font-size: 1.3em; font-weight: 600; }
.nav-pills .nav-item { margin: 2px 0; }
.sticky { position: sticky; top: 8px; }
.btn, .btn-group, button { display: none; }  /* filter and toggle buttons need the scripts left out */
.card:has(.btn-group) { display: none; }
table { border-collapse: collapse; margin: 8px 0 16px; }
.table { width: 100%; }
th, td { border: 1px solid #dee2e6; padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #f1f3f5; }
.table-responsive { overflow-x: auto; }
.show-scrollbars { max-height: 240px; overflow: auto; }
.cooltip .top { display: none; }
.modal, .invisible, .collapse:not(.show) { display: none; }
.h6, h6 { font-weight: 600; }
.lead { font-size: 1.05em; color: #495057; }
.text-success { color: #28a745; } .text-danger { color: #dc3545; } .text-warning { color: #b8860b; }
.text-muted { color: #6c757d; }
i.fas, i.far, i.fa { font-style: normal; font-weight: 700; }
.fa-check-circle::before, .fa-check::before { content: "\\2714"; }
.fa-times::before, .fa-times-circle::before { content: "\\2718"; }
.fa-flag::before { content: "\\2691"; }
.fa-question-circle::before { content: "?"; }
.fa-info-circle::before { content: "\\2139"; }
.mmfm-verdict { margin: 12px 24px; padding: 12px 16px; border-radius: 4px; border: 1px solid; }
.mmfm-verdict strong { font-size: 1.15em; }
.mmfm-passed { background: #e6f4ea; border-color: #b7dfc3; }
.mmfm-quarantined { background: #fff6e0; border-color: #f0d48a; }
.mmfm-failed { background: #fde8ea; border-color: #f1b0b7; }
.mmfm-unknown { background: #eef0f2; border-color: #ccd; }
a.mmfm-status, span.mmfm-status { display: inline-block; padding: 2px 6px; border-radius: 3px; color: #212529; }
.mmfm-note { margin: 6px 0 0; color: #495057; font-size: 0.92em; }
.mmfm-rules { width: auto; margin-top: 8px; background: #fff; }
"""
