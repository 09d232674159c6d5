"""The paper's user study as a tool: `study.py` builds a self-contained browser study and scores its answers,
`page.html` is the page it fills in. It computes no metric of the generated images, so it stands at the scripts'
end of the import order (scripts/user_study.py is its command line)."""
