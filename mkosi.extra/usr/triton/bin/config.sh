#!/bin/bash
# node.config as shell variables, for what Triton runs on a compute node:
# its agents' install scripts, joysetup.sh and agentsetup.sh source this
# file, as they source /lib/sdc/config.sh on SmartOS.
#
#   . /usr/triton/bin/config.sh
#   load_sdc_config            # CONFIG_<key> for every key in node.config
#   load_sdc_config MY_        # MY_<key> instead
#   bash config.sh -json       # node.config as one JSON object
#
# load_sdc_config also sets <prefix>config_inc_dir, and (through
# load_sdc_config_filename) SDC_CONFIG_FILENAME, COMPUTE_NODE_CONFIG_FILENAME
# and SDC_CONFIG_INC_DIR. The file is $SDC_CONFIG_FILENAME when the caller
# set it. Else, on a node not set up yet (no node.config on the pool,
# $TRITON_POOL_CONFIG_FILENAME), the copy that `sdc-server setup` fetched,
# /var/tmp/node.config/node.config, as SmartOS's config.sh does on an unset-up
# compute node: CNAPI puts the operator's disk settings (layout, spares,
# width, cache, disk_exclude) at its top, for joysetup.sh's disklayout.
# Else $TRITON_CONFIG_DIR/node.config (/usr/triton/config, where the
# platform puts this boot's node.config, on the pool once set up).
# The generic file beside it ($SDC_CONFIG_INC_DIR/generic) is read first,
# if there is one.
#
# node.config is data, never code: this parser reads it and nothing in it
# is evaluated. Each line is key='value', key="value" or key=value:
# single quotes keep everything; double quotes keep everything but turn
# \" \\ \$ \` into the character; parts written side by side join
# ('a'"b"c is abc); an unquoted value ends at the first blank (an unquoted
# $(...) or `...` is one part, blanks and all), and the rest of the line is
# ignored. So $(...), backticks, ; and $VAR in a value stay text. Leading blanks, blank lines, comment lines and lines that do not
# start with a letter are skipped, as config.sh always did; a line that
# starts with a letter but is not key=value, or whose quote is never
# closed, is skipped with a warning on stderr.

: "${SDC_CONFIG_TEMP_FILENAME:=/var/tmp/node.config/node.config}"
: "${TRITON_POOL_CONFIG_FILENAME:=/opt/triton/config/node.config}"

_sdc_config_warn() {
    echo "config.sh: $*" >&2
}

# Sets SDC_CONFIG_FILENAME, COMPUTE_NODE_CONFIG_FILENAME, SDC_CONFIG_INC_DIR.
load_sdc_config_filename() {
    COMPUTE_NODE_CONFIG_FILENAME="${TRITON_CONFIG_DIR:-/usr/triton/config}/node.config"
    if [[ -z ${SDC_CONFIG_FILENAME:-} ]]; then
        if [[ ! -f $TRITON_POOL_CONFIG_FILENAME && -f $SDC_CONFIG_TEMP_FILENAME ]]; then
            COMPUTE_NODE_CONFIG_FILENAME=$SDC_CONFIG_TEMP_FILENAME
        fi
        SDC_CONFIG_FILENAME=$COMPUTE_NODE_CONFIG_FILENAME
    fi
    SDC_CONFIG_INC_DIR=$(dirname -- "$SDC_CONFIG_FILENAME")
    return 0
}

# The characters of a double-quoted part, its escapes undone -> __sdc_text.
_sdc_config_unescape() {
    local __sdc_s=$1 __sdc_out="" __sdc_re='^([^\]*)\\(.)(.*)$'
    while [[ $__sdc_s =~ $__sdc_re ]]; do
        __sdc_out+=${BASH_REMATCH[1]}
        case ${BASH_REMATCH[2]} in
            '"' | '\' | '$' | '`') __sdc_out+=${BASH_REMATCH[2]} ;;
            *) __sdc_out+="\\${BASH_REMATCH[2]}" ;;
        esac
        __sdc_s=${BASH_REMATCH[3]}
    done
    __sdc_text=$__sdc_out$__sdc_s
    return 0
}

# What follows key= on a line -> __sdc_value; fails on a quote never closed.
_sdc_config_value() {
    local __sdc_rest=$1 __sdc_out="" __sdc_n __sdc_text q="'"
    local re_blank='^[[:space:]]' re_single="^${q}([^${q}]*)${q}" re_double='^"(([^"\]|\\.)*)"'
    local re_escaped='^\\(.)' re_word="^[^[:space:]${q}\"\\\$\`]+"
    # $(...) and `...` unquoted: kept whole, as the shell would take them
    # for one word, but as text; a lone $ or ` is a character.
    local re_command='^(\$\([^)]*\)|`[^`]*`)' re_sign='^[$`]'
    while [[ -n $__sdc_rest ]]; do
        if [[ $__sdc_rest =~ $re_blank ]]; then
            break
        elif [[ $__sdc_rest =~ $re_single ]]; then
            __sdc_n=${#BASH_REMATCH[0]}
            __sdc_out+=${BASH_REMATCH[1]}
        elif [[ $__sdc_rest =~ $re_double ]]; then
            __sdc_n=${#BASH_REMATCH[0]}
            _sdc_config_unescape "${BASH_REMATCH[1]}"
            __sdc_out+=$__sdc_text
        elif [[ $__sdc_rest =~ $re_escaped ]]; then
            __sdc_n=${#BASH_REMATCH[0]}
            __sdc_out+=${BASH_REMATCH[1]}
        elif [[ $__sdc_rest =~ $re_command || $__sdc_rest =~ $re_sign || $__sdc_rest =~ $re_word ]]; then
            __sdc_n=${#BASH_REMATCH[0]}
            __sdc_out+=${BASH_REMATCH[0]}
        else
            return 1
        fi
        __sdc_rest=${__sdc_rest:$__sdc_n}
    done
    __sdc_value=$__sdc_out
    return 0
}

# One file's key=value lines -> <prefix><key>.
_sdc_config_read() {
    local __sdc_prefix=$1 __sdc_file=$2 __sdc_line __sdc_n=0 __sdc_key __sdc_value
    local __sdc_re='^([A-Za-z][A-Za-z0-9_]*)=(.*)$'
    while IFS= read -r __sdc_line || [[ -n $__sdc_line ]]; do
        __sdc_n=$((__sdc_n + 1))
        __sdc_line=${__sdc_line%$'\r'}
        __sdc_line=${__sdc_line#"${__sdc_line%%[![:space:]]*}"}
        [[ $__sdc_line == [A-Za-z]* ]] || continue
        if ! [[ $__sdc_line =~ $__sdc_re ]]; then
            _sdc_config_warn "${__sdc_file}: line ${__sdc_n}: not key=value; skipped"
            continue
        fi
        # Only [A-Za-z0-9_]: a name printf -v could evaluate (a[...]) never gets here.
        __sdc_key=${BASH_REMATCH[1]}
        if ! _sdc_config_value "${BASH_REMATCH[2]}"; then
            _sdc_config_warn "${__sdc_file}: line ${__sdc_n}: ${__sdc_key}: a quote is not closed; skipped"
            continue
        fi
        printf -v "${__sdc_prefix}${__sdc_key}" '%s' "$__sdc_value" ||
            _sdc_config_warn "${__sdc_file}: line ${__sdc_n}: cannot set ${__sdc_prefix}${__sdc_key}"
    done <"$__sdc_file"
    return 0
}

_sdc_config_load() {
    local __sdc_prefix=${1:-CONFIG_} __sdc_file LC_ALL=C
    if ! [[ $__sdc_prefix =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        _sdc_config_warn "load_sdc_config: ${__sdc_prefix@Q} is not a variable name prefix"
        return 1
    fi
    load_sdc_config_filename
    [[ -f $SDC_CONFIG_FILENAME ]] ||
        _sdc_config_warn "no node.config (${SDC_CONFIG_FILENAME}, nor ${SDC_CONFIG_TEMP_FILENAME})"
    for __sdc_file in "${SDC_CONFIG_INC_DIR}/generic" "$SDC_CONFIG_FILENAME"; do
        if [[ -f $__sdc_file && -r $__sdc_file ]]; then
            _sdc_config_read "$__sdc_prefix" "$__sdc_file"
        fi
    done
    printf -v "${__sdc_prefix}config_inc_dir" '%s' "$SDC_CONFIG_INC_DIR"
    return 0
}

# Loads node.config's values as <prefix><key> (default prefix CONFIG_).
# Safe under the caller's errexit and nounset; its own work is not traced
# under xtrace (the values include root's password hash).
load_sdc_config() {
    local __sdc_rc=0 __sdc_trace=0
    if [[ $- == *x* ]]; then
        __sdc_trace=1
        set +x
    fi
    if ! _sdc_config_load "$@"; then
        __sdc_rc=1
    fi
    if ((__sdc_trace)); then
        set -x
    fi
    return "$__sdc_rc"
}

# `bash config.sh -json`: node.config as one JSON object (keys sorted).
if [[ ${BASH_SOURCE[0]} == "$0" && ${1:-} == -json ]]; then
    load_sdc_config __SDC_JSON_ || exit 1
    for __sdc_name in $(compgen -v __SDC_JSON_); do
        printf '%s\0%s\0' "${__sdc_name#__SDC_JSON_}" "${!__sdc_name}"
    done | exec python3 -c '
import json, sys
parts = sys.stdin.buffer.read().split(b"\0")[:-1]
pairs = {parts[i].decode(): parts[i + 1].decode(errors="replace") for i in range(0, len(parts), 2)}
print(json.dumps(pairs, indent=2))'
fi
