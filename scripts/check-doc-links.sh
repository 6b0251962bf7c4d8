#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Every relative link in README.md, CHANGELOG.md and docs/*.md must lead somewhere: the file or
# folder exists, and a #fragment names a heading of the target (GitHub's anchor rule). Links out
# of the repository (http:, https:, mailto:) are not followed. Code blocks and `code spans` are
# skipped, so C++ such as `[](int i)` is not taken for a link. Prints each broken link; exit 1 if any.
set -euo pipefail
cd "$(dirname "$0")/.."

files=(README.md CHANGELOG.md)
while IFS= read -r f; do files+=("$f"); done < <(find docs -name '*.md' 2>/dev/null | sort)

# The text of a Markdown file without fenced code blocks and code spans.
prose() {
  awk '/^[[:space:]]*(```|~~~)/ { fenced = !fenced; next } !fenced { gsub(/`[^`]*`/, ""); print }' "$1"
}

# GitHub's anchors for the headings of a Markdown file, one a line: lower case, punctuation
# dropped (non-ASCII too, which none of our headings need), spaces to hyphens.
anchors() {
  prose "$1" | awk '/^#+[[:space:]]/ {
    sub(/^#+[[:space:]]+/, ""); s = tolower($0); gsub(/[^a-z0-9 _-]/, "", s); gsub(/ /, "-", s); print s
  }'
}

broken=0
checked=0
for file in "${files[@]}"; do
  [[ -f $file ]] || continue
  dir=$(dirname "$file")
  while IFS= read -r link; do
    target=${link#*](}
    target=${target%)}
    target=${target%% *} # [text](path "title")
    case $target in
    http://* | https://* | mailto:*) continue ;;
    esac
    checked=$((checked + 1))
    path=${target%%#*}
    fragment=
    [[ $target == *#* ]] && fragment=${target#*#}
    resolved=$file
    [[ -n $path ]] && resolved=$dir/$path
    if [[ ! -e $resolved ]]; then
      echo "$file: link to '$target': $resolved does not exist"
      broken=$((broken + 1))
    elif [[ -n $fragment ]] && ! anchors "$resolved" | grep -qx -- "$fragment"; then
      echo "$file: link to '$target': no heading with anchor '#$fragment' in $resolved"
      broken=$((broken + 1))
    fi
  done < <(prose "$file" | grep -o '\[[^]]*\]([^)]*)' || true)
done

echo "check-doc-links: $checked relative links in ${#files[@]} files, $broken broken"
((broken == 0))
