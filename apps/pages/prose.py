"""PROSE: placeholder until the family lands; shows saved numbers if runs of it exist."""
from pages import _ui

_ui.family_page("prose")
