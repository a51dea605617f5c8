"""Dragonfly: placeholder until the family lands; shows saved numbers if runs of it exist."""
from views import _ui

_ui.family_page("dragonfly")
