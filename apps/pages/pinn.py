"""PINN: runs of the physics-informed family; live exploration once the family is installed."""
from pages import _ui

_ui.family_page("pinn")
