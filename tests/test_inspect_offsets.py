"""The offset table against the installed PHP headers: offsetof() compiled with gcc."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

from tenantfpm.inspect.offsets import TABLES

FIELDS = {
    "eg_current_execute_data": "offsetof(zend_executor_globals, current_execute_data)",
    "ex_opline": "offsetof(zend_execute_data, opline)",
    "ex_func": "offsetof(zend_execute_data, func)",
    "ex_prev_execute_data": "offsetof(zend_execute_data, prev_execute_data)",
    "ex_this_type_info": "offsetof(zend_execute_data, This) + offsetof(zval, u1)",
    "fn_type": "offsetof(zend_function, type)",
    "fn_function_name": "offsetof(zend_function, common.function_name)",
    "fn_scope": "offsetof(zend_function, common.scope)",
    "op_array_filename": "offsetof(zend_op_array, filename)",
    "op_array_line_start": "offsetof(zend_op_array, line_start)",
    "op_lineno": "offsetof(zend_op, lineno)",
    "str_len": "offsetof(zend_string, len)",
    "str_val": "offsetof(zend_string, val)",
    "ce_name": "offsetof(zend_class_entry, name)",
    "sg_request_info": "offsetof(sapi_globals_struct, request_info)",
    "ri_request_method": "offsetof(sapi_request_info, request_method)",
    "ri_query_string": "offsetof(sapi_request_info, query_string)",
    "ri_content_length": "offsetof(sapi_request_info, content_length)",
    "ri_path_translated": "offsetof(sapi_request_info, path_translated)",
    "ri_request_uri": "offsetof(sapi_request_info, request_uri)",
    "user_function": "ZEND_USER_FUNCTION",
    "call_kind_mask": "(ZEND_CALL_CODE | ZEND_CALL_TOP)",
    "call_top_code": "ZEND_CALL_TOP_CODE",
    "call_nested_code": "ZEND_CALL_NESTED_CODE",
}


def test_every_field_is_checked():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(TABLES["8.2"])}


def test_php82_table_matches_the_headers(tmp_path):
    config = shutil.which("php-config8.2")
    assert config, "php8.2-dev (php-config8.2) is installed by `make system-deps`"
    includes = subprocess.run([config, "--includes"], capture_output=True, text=True,
                              check=True).stdout.split()
    version = subprocess.run([config, "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version.startswith("8.2.")
    src = tmp_path / "offsets.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include \"php.h\"\n"
                   "#include \"SAPI.h\"\n#include \"zend_globals.h\"\nint main(void) {\n"
                   + "".join(f'    printf("{k} %zu\\n", (size_t)({v}));\n'
                             for k, v in FIELDS.items())
                   + "    return 0;\n}\n")
    exe = tmp_path / "offsets"
    subprocess.run(["gcc", "-w", *includes, "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    measured = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    assert measured == dataclasses.asdict(TABLES["8.2"])
