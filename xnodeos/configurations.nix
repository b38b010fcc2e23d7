# Placeholder: filled in by its issue.
{ nixpkgs, self }:
{ }
