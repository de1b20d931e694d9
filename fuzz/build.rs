fn main() {
    mlx_link::emit();
}
