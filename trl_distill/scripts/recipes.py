"""`trl-distill recipes`: the recipes and accelerate configs that ship inside the package (as `tune ls` / `tune cp`).

```bash
trl-distill recipes                      # list them: scas/toy, scas/qwen2.5-1.5b, accelerate/zero3, ...
trl-distill recipes cp scas/toy my_run/  # copy one to edit (my_run/toy.yaml)
trl-distill scas --config scas/toy       # a packaged recipe by name works wherever a --config path does
```
"""

import argparse
import os
import shutil


def recipes_dir() -> str:
    """The packaged recipes (`trl_distill/recipes`; in a clone, a link to the repository's `recipes/`)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def list_recipes() -> list[str]:
    """Every packaged recipe by name, `<folder>/<file stem>` (`scas/toy`, `accelerate/zero3`), sorted."""
    root = recipes_dir()
    names = []
    for directory, _, files in os.walk(root, followlinks=True):
        for file in files:
            if file.endswith((".yaml", ".yml")):
                relative = os.path.relpath(os.path.join(directory, file), root)
                names.append(os.path.splitext(relative)[0].replace(os.sep, "/"))
    return sorted(names)


def recipe_path(name: str) -> str:
    """
    The file of the packaged recipe `name` (`scas/toy`, `scas/toy.yaml`, `recipes/scas/toy.yaml`, `ogls-sd/toy`).

    Raises:
        `FileNotFoundError`: naming the packaged recipes, when there is none by that name.
    """
    stem = name.removeprefix("recipes/").removesuffix(".yaml").removesuffix(".yml")
    folder, _, file = stem.rpartition("/")
    stem = f"{folder.replace('-', '_')}/{file}" if folder else stem
    path = os.path.join(recipes_dir(), *stem.split("/")) + ".yaml"
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No packaged recipe {name!r}. `trl-distill recipes` lists them: {', '.join(list_recipes())}."
        )
    return path


def resolve_config(config: str) -> str:
    """A `--config` value as a file: the path itself when it exists, else the packaged recipe of that name."""
    if os.path.isfile(config):
        return config
    try:
        return recipe_path(config)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--config {config}: no such file, and {error}") from None


def copy_recipe(name: str, destination: str) -> str:
    """Copies the packaged recipe `name` to `destination` (a folder, created if needed, or a file path); returns the
    written path. An existing file is not overwritten."""
    source = recipe_path(name)
    is_folder = destination.endswith(("/", os.sep)) or os.path.isdir(destination)
    if not is_folder and not destination.endswith((".yaml", ".yml")):
        is_folder = True
    target = os.path.join(destination, os.path.basename(source)) if is_folder else destination
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists; remove it or copy to another place.")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    shutil.copyfile(source, target)
    return target


def make_parser(prog: str | None = "trl-distill recipes") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", metavar="{ls,cp}")
    sub.add_parser("ls", help="list the packaged recipes (the default)")
    cp = sub.add_parser("cp", help="copy a packaged recipe to edit it")
    cp.add_argument("name", help="a recipe name from `trl-distill recipes`, e.g. scas/toy")
    cp.add_argument("destination", help="a folder (the file keeps its name) or a .yaml path")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.action == "cp":
        try:
            print(f"Copied {args.name} to {copy_recipe(args.name, args.destination)}")
        except (FileNotFoundError, FileExistsError) as error:
            parser.exit(1, f"trl-distill recipes cp: {error}\n")
        return 0
    print(f"Packaged recipes ({recipes_dir()}); use one with `--config NAME` or copy it with `recipes cp NAME DIR`:")
    for name in list_recipes():
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
