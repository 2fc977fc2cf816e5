"""`sprat topology`: list the machine presets, or show one.

    sprat topology list
    sprat topology show amd-4x4
    sprat topology show my-machine.toml
"""

from emulator.interconnect import list_presets, load_topology, render_topology


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "topology", help="list or show machine topologies",
        description="Show the packages, cores, shared caches, latencies and the core-to-core "
                    "distance matrix of a preset machine or of a topology file (TOML).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=type(parser))
    show = actions.add_parser("show", help="show one topology",
                              description="Print a topology: a preset name or a TOML file.")
    show.add_argument("name", metavar="NAME|FILE", help="a preset (see `list`) or a .toml path")
    show.set_defaults(run=run_show)
    listing = actions.add_parser("list", help="list the presets")
    listing.set_defaults(run=run_list)


def run_show(args) -> int:
    print(render_topology(load_topology(args.name)))
    return 0


def run_list(args) -> int:
    for name in list_presets():
        topology = load_topology(name)
        print(f"{name:12} {topology.n_cores():3} cores  {topology.description}")
    return 0
