"""Struct offsets of the PHP engine, per PHP minor version (x86_64, non-ZTS builds).

Each table was produced with offsetof() against that version's headers
(php8.2-dev: /usr/include/php/20220829); tests/test_inspect_offsets.py
compiles the same offsetof() list against the installed headers and compares,
so a table that drifts from its PHP fails the suite.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Offsets:
    eg_current_execute_data: int  # zend_executor_globals.current_execute_data
    ex_opline: int  # zend_execute_data.opline
    ex_func: int
    ex_prev_execute_data: int
    ex_this_type_info: int  # This.u1.type_info: the call kind
    fn_type: int  # zend_function.type
    fn_function_name: int  # .common.function_name
    fn_scope: int  # .common.scope
    op_array_filename: int
    op_array_line_start: int
    op_lineno: int  # zend_op.lineno
    str_len: int  # zend_string.len
    str_val: int
    ce_name: int  # zend_class_entry.name
    sg_request_info: int  # sapi_globals_struct.request_info
    ri_request_method: int
    ri_query_string: int
    ri_content_length: int
    ri_path_translated: int
    ri_request_uri: int
    user_function: int = 2  # ZEND_USER_FUNCTION
    call_kind_mask: int = 196608  # ZEND_CALL_CODE | ZEND_CALL_TOP
    call_top_code: int = 196608
    call_nested_code: int = 65536


TABLES: dict[str, Offsets] = {
    "8.2": Offsets(
        eg_current_execute_data=488, ex_opline=0, ex_func=24, ex_prev_execute_data=48,
        ex_this_type_info=40, fn_type=0, fn_function_name=8, fn_scope=16,
        op_array_filename=152, op_array_line_start=160, op_lineno=24, str_len=16,
        str_val=24, ce_name=8, sg_request_info=8, ri_request_method=0, ri_query_string=8,
        ri_content_length=24, ri_path_translated=32, ri_request_uri=40,
    ),
}
