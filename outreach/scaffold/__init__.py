"""Starting points: a working project (``outreach init``) and a plugin distribution
(``outreach new-plugin``), both written from files shipped inside the package.

The examples live in ``outreach/examples/`` (the bakery is the repository's demo, copied there by
``python3 dev.py sync-demo`` and checked by a test); the plugin templates in
``outreach/scaffold/templates/``. Neither ever overwrites a file.
"""

from outreach.scaffold.files import ExistingFiles, write_tree
from outreach.scaffold.plugin import PLUGIN_KINDS, new_plugin
from outreach.scaffold.project import EXAMPLES, init_project

__all__ = ["EXAMPLES", "ExistingFiles", "PLUGIN_KINDS", "init_project", "new_plugin", "write_tree"]
