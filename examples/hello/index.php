<?php
// The example tenant: proves the request went through tenantfpm's sandboxed php-cgi worker.
header('Content-Type: text/plain');
printf("Hello from tenant %s: PHP %s, worker pid %s on the host (%d inside its sandbox), uid %d\n",
       getenv('TENANT') ?: '?', PHP_VERSION, getenv('TENANTFPM_WORKER_PID') ?: '?', getmypid(),
       posix_getuid());
