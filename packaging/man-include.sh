#!/bin/sh
# Writes a help2man include file for PROGRAM: each COMMAND's own --help text as a subsection of
# COMMANDS, then FILES and SEE ALSO, so the man page carries every option the program documents.
# usage: packaging/man-include.sh PROGRAM OUTPUT COMMAND...
set -eu
program=$1 out=$2; shift 2
name=$(basename "$program")
{
  echo "[COMMANDS]"
  for command in "$@"; do
    printf '.SS "%s %s"\n.nf\n' "$name" "$command"
    # roff: a backslash is \e; a line starting with . or ' is text, not a request
    "$program" "$command" --help 2>&1 | sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
    printf '.fi\n'
  done
  echo "[FILES]"
  case "$name" in
    nodeform-agent)
      printf '.TP\n/etc/nodeform/agent.yaml\nsettings of run (every key commented at its default)\n'
      printf '.TP\n/etc/nodeform/seed.yaml\nthe identity seed when it is not in the SMBIOS serial\n'
      printf '.TP\n/var/lib/nodeform/\nstate: cached spec, credential, platform-ready marker, report spool\n' ;;
    *)
      printf '.TP\n/etc/nodeform/controller.yaml\nsettings of serve (every key commented at its default)\n'
      printf '.TP\n/etc/nodeform/site/\nthe site: site.yaml, nodes/, specs/, postures/, presets/, secrets.yaml\n'
      printf '.TP\n/var/lib/nodeform-controller/\nstate: nodeform.db, tls/, operator-token\n' ;;
  esac
  echo "[SEE ALSO]"
  printf 'The documentation in /usr/share/doc/%s/.\n' "$name"
} >"$out"
