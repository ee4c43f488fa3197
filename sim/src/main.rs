fn main() {
    println!("cache-sim: the simulation CLI arrives with the sim issue");
}
