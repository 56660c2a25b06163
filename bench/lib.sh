# Shared by the bench scripts: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# nginx_conf DIR PORT UPSTREAM [MAIN_DIRECTIVE...]: writes DIR/nginx.conf, the nginx every
# proxy benchmark compares with: listening on 127.0.0.1:PORT, proxy_pass to UPSTREAM (host:port)
# over HTTP/1.1 keep-alive (upstream keepalive 64, `Connection ""`), the headers ours sets
# (Host kept, X-Forwarded-For appended, X-Forwarded-Proto and -Host set), access log off, no
# per-connection request cap on either side (ours has none; nginx's default is 1000), its temp
# paths and pid in DIR. MAIN_DIRECTIVEs (default `worker_processes auto;`) shape its
# processes. Run it in the foreground: nginx -p DIR -e DIR/error.log -c DIR/nginx.conf -g 'daemon off;'
nginx_conf() {
    local dir="$1" port="$2" upstream="$3"
    shift 3
    local main=("$@")
    ((${#main[@]})) || main=("worker_processes auto;")
    mkdir -p "$dir/temp"
    {
        printf '%s\n' "${main[@]}"
        cat <<EOC
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/temp/body;
    proxy_temp_path $dir/temp/proxy;
    fastcgi_temp_path $dir/temp/fastcgi;
    uwsgi_temp_path $dir/temp/uwsgi;
    scgi_temp_path $dir/temp/scgi;
    upstream app {
        server $upstream;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOC
    } >"$dir/nginx.conf"
}
