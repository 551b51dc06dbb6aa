public class Matrix {
    private final double[][] cells;

    public Matrix(int rows, int columns) {
        cells = new double[rows][columns];
    }

    public Matrix multiply(Matrix other) {
        int n = cells.length, m = other.cells[0].length, k = other.cells.length;
        Matrix result = new Matrix(n, m);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
                for (int x = 0; x < k; x++)
                    result.cells[i][j] += cells[i][x] * other.cells[x][j];
        return result;
    }
}
